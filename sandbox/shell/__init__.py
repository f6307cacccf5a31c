"""The pexpect layer: a bash in the jail whose commands are delimited by markers.

`Shell` spawns the jail's argv on a PTY (api mode: `ptyjail`, through the compiled
launcher; the operator's interactive shell: pexpect, for its interact loop), evals
the shipped rc file (`shell_rc.bash`) as its first input, and then talks to bash with one
line per command: `\\__sbx_run $'<command, ANSI-C quoted>'`. bash's own prompt expansion
prints OSC 133 style markers: C (PS0) when it has read the line, D (PS1, with `$?`) when
the prompt is back. The output is exactly the bytes between C and D. Nothing is guessed
and nothing sleeps.

What a command's result can be trusted for (API mode), and how:

- The recorder's hooks cannot be changed from inside: the prompts, PROMPT_COMMAND and
  `__sbx_run` are readonly, `enable` is disabled, the call is `\\__sbx_run` (no alias)
  and the command is eval'd in POSIX mode for the lookup (the special builtin `eval`
  wins over a function named eval or builtin). A command that tries (its output says
  "readonly function/variable" for a recorder name) is reported as tampering.
- Every marker carries bash's command number `\\#`, which no command can set. After D we
  send a probe line with a fresh random token (`__sbx_t=<token>`) and read until the D
  that shows it: a D printed by the command itself (a forgery, even with the right nonce
  and number) is followed by the real D before the probe's, and is reported as
  tampering on that command's result; the exit code and output are then those of the
  real D. A D with the nonce before the next command's C (a forged end the probe did not
  catch because the command read the probe from /dev/tty) is reported on that command.
- D reports the shell state a DEBUG trap needs to skip or rewrite commands (extdebug,
  functrace) and POSIXLY_CORRECT's attributes; each is tampering. A non-numeric exit code
  (e.g. `shopt -u promptvars`) is tampering.
- From outside, at every D (/proc/<bash>, no fork): bash is still the same program image
  (its auxv changes on exec) with stdin/stdout/stderr on the PTY; it is blocked in its
  own prompt read (syscall, fd and buffer as at start: a `read` builtin or a sourced
  /dev/tty differ); and it has read every byte we sent it (rchar), so no other process
  took a command line or probe off the terminal. Together these catch a recorder
  emulated by a command (in bash or in another process) on every result it fakes.
- DEBUG and RETURN traps are cleared around every command, so a trap a command sets never
  runs on the recorder's lines.
- Partial or foreign markers in output never stall the reader: a marker candidate that
  cannot complete is output, and only a trailing, still-possible prefix waits for bytes.
- Output that arrives between commands (background jobs) is returned as `background`.

Not covered: a process that writes into the jailed bash's memory (ptrace or
/proc/<pid>/mem of the agent's own process) controls everything bash prints. Output a
command prints is its output, whoever wrote it (a background job, an ERR trap). The nonce
is not a secret.

Reads go straight to the PTY fd in 64 KiB chunks and only the newly read tail is
searched for markers, so throughput does not fall as output grows (pexpect's default
2 KB reads and whole-buffer regexes are 10x slower here).

The modules, each importing only those listed before it:

- `marker`: the markers' grammar (regexes, D's fields, quoting, tamper kinds); pure.
- `capture`: the head-and-tail output cap (also used by `execute` and `wrapper`).
- `collect`: one API command's state machine, C .. D .. probe's D, into a `RawResult`.
- `probe`: bash seen from /proc (identity, rchar, prompt wait) and the probe line.
- `relay`: the operator's terminal passed through, cut into commands (`sandbox shell`).
- `driver`: `Shell` itself: the PTY, start-up, the command loop and its timeouts.
"""

from .capture import Capture
from .collect import RawResult
from .driver import Shell

__all__ = ["Capture", "RawResult", "Shell"]
