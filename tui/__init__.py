"""sandbox_tui: the operator TUI (Textual) on top of the `sandbox` event store.

It reads the store only (never a supervisor's memory) and kills through
`sandbox.control.kill_session`, the same path as `sandbox kill`. The core `sandbox`
package never imports this one, nor Textual.
"""
