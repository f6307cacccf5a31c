"""The doors a caller comes in by: `api` (Sandbox), `aio` (AsyncSandbox), `execute` and
`spawn` (a process in the live jail), `exec_options`, `files`, `options` (a sandbox's
settings, written once), `loop` (the sync API's loop), `pool` and `refill` (warm
sandboxes), `wrapper` (`sandbox run`). Above them: `cli`, `tui`, `adapters`, `ray`.
"""
