# The rc file of every recorded shell. shell.py passes it in the environment and the
# shell's first input line evals it, so nothing is written to disk where the agent could
# edit it before it runs.
#
# Markers follow OSC 133: C (a command line was read) comes from PS0 and D (the prompt is
# back, with `$?`) from PS1. Both are printed by bash's own prompt expansion, not by
# functions, and both carry bash's command number `\#`, which nothing in the shell can
# set: C of command k carries k, its D carries k+1. A copied or forged marker therefore
# shows up as a duplicate or out-of-order number. The nonce is not a secret (the agent
# can read PS1); it only tells our markers from markers in ordinary output.
#
# The agent owns this bash, so everything the recorder relies on is made readonly: the
# prompts, PROMPT_COMMAND and the recorder's functions; `enable` is disabled (no builtin
# can be switched off or loaded from a .so). Commands are run by `\__sbx_run` (the
# backslash defeats aliases) which evals them in POSIX mode for the lookup: there the
# special builtin `eval` wins over any function named eval (or builtin, or command).
# D also reports the state a DEBUG trap would need to skip or rewrite a command
# (extdebug, functrace) and POSIXLY_CORRECT's attributes; shell.py treats those as
# tampering. What this cannot stop is written down in shell.py's module docstring.
__sbx_n=$__SBX_NONCE
__sbx_mode=$__SBX_MODE
unset __SBX_NONCE __SBX_RC __SBX_MODE
# Readline >= 8.1 wraps input in bracketed-paste escapes, which would reach our parser.
bind 'set enable-bracketed-paste off' 2>/dev/null
# A history file in the workspace would leak commands between sessions; we record anyway.
unset HISTFILE
# Keep every command in memory history: interactive mode reads the text from it (and
# nothing may keep a command out of it).
HISTCONTROL=
HISTIGNORE=
HISTSIZE=10000
HISTTIMEFORMAT=
readonly HISTCONTROL HISTIGNORE HISTSIZE HISTTIMEFORMAT
# Pagers wait for a keypress that never comes in API mode.
export PAGER=cat GIT_PAGER=cat SYSTEMD_PAGER=cat
# The prompts are readonly: a venv's activate script would only fail to prepend to PS1.
export VIRTUAL_ENV_DISABLE_PROMPT=1
# The probe token: shell.py assigns a fresh one after every command (`__sbx_t=...`) and
# waits for the D that shows it, so nothing a command prints can pass for its end.
__sbx_t=
# Fields of D: exit code; nonce; command number; probe token; $-; the attributes of
# POSIXLY_CORRECT and __sbx_s; BASHOPTS. (In shell mode C adds the command text, last: it may hold ';'.)
__sbx_d='\e]133;D;$?;'"$__sbx_n"';\#;${__sbx_t};$-;${POSIXLY_CORRECT@a}${__sbx_s@a};${BASHOPTS}'
if [ "$__sbx_mode" = api ]; then
  # The pty's modes (no echo, no ONLCR, no ICANON) are set by the supervisor before
  # bash starts (driver._api_modes).
  PS1=$__sbx_d'\a'
  PS0='\e]133;C;'"$__sbx_n"';\#\a'
  PROMPT_COMMAND=
  # stdin is /dev/null: an agent has no keyboard, `read` must not hang until the timeout.
  # The newline matters: the command is parsed after POSIX mode is off again. DEBUG and
  # RETURN traps are cleared before and after it (`trap` and `return` are special
  # builtins, found before functions in POSIX mode), so a trap a command sets never runs
  # on the recorder's own lines. POSIX mode stays on at the prompt; the next command
  # turns it off first. D shows __sbx_s's attributes: a readonly one would fake `$?`.
  __sbx_run() {
    POSIXLY_CORRECT=1
    trap - DEBUG RETURN
    eval '\unset POSIXLY_CORRECT
'"$1" </dev/null
    __sbx_s=$?
    POSIXLY_CORRECT=1
    trap - DEBUG RETURN
    return "$__sbx_s"
  }
  readonly -f __sbx_run
else
  PS1='\[\e]133;A;'"$__sbx_n"'\a\]\[\e[1;32m\]sandbox\[\e[0m\]:\w\$ '
  PS1='\['$__sbx_d'\a\]'$PS1
  # The command text goes with C: PS0 is expanded after bash has read (and added to
  # history) the line and before it runs, so the command cannot rewrite its own text
  # (`history -s`). It runs in a subshell: unsetting shadowing functions there (POSIX
  # mode, where `unset` is the builtin) changes nothing in the operator's shell.
  # PS0 is not a readline prompt: \[ \] would print as raw \001 \002.
  PS0='\e]133;C;'"$__sbx_n"';\#;$(\__sbx_text)\a'
  __sbx_text() {
    POSIXLY_CORRECT=1
    unset -f builtin
    unset POSIXLY_CORRECT
    case :$SHELLOPTS: in *:history:*) ;; *) builtin printf '%s' '[history off] ' ;; esac
    # `history 1`, not `fc -ln -1`: in a command substitution fc lags one entry.
    c=$(builtin history 1)
    # "%5d%c %s": the number, a space or '*', a space, the text.
    c=${c#"${c%%[! ]*}"}
    c=${c#"${c%%[!0-9]*}"}
    c=${c:2:2000}
    builtin printf '%s' "${c//[$'\a\e']/}"
  }
  readonly -f __sbx_text
  PROMPT_COMMAND=
fi
# A continuation prompt would leak into the output of multi-line commands in API mode;
# in shell mode it says "still reading the same command" (no C, no D).
PS2=
[ "$__sbx_mode" = api ] || PS2='\[\e]133;P;'"$__sbx_n"'\a\]> '
readonly PS0 PS1 PS2 PROMPT_COMMAND __sbx_n __sbx_mode
unset __sbx_d
enable -n enable
cd "${SANDBOX_WORKDIR:-$HOME}" 2>/dev/null
