# The rc file of every recorded shell. shell.py passes it in the environment and the
# shell's first input line evals it, so nothing is written to disk where the agent could
# edit it before it runs. Markers follow OSC 133 (prompt A, command start C, command end
# D with exit code), each carrying the session's random nonce: output that merely
# contains a marker (a `cat` of a log file) cannot end a command early, and a marker with
# a wrong nonce is recorded as forged.
__sbx_n=$__SBX_NONCE
__sbx_mode=$__SBX_MODE
unset __SBX_NONCE __SBX_RC __SBX_MODE
# Readline >= 8.1 wraps input in bracketed-paste escapes, which would reach our parser.
bind 'set enable-bracketed-paste off' 2>/dev/null
# A history file in the workspace would leak commands between sessions; we record anyway.
unset HISTFILE
# Keep every command in memory history: interactive mode reads the text from it.
HISTCONTROL=
# Pagers wait for a keypress that never comes in API mode.
export PAGER=cat GIT_PAGER=cat SYSTEMD_PAGER=cat
# A continuation prompt would leak into the output of multi-line commands.
PS2=
__sbx_active=0
if [ "$__sbx_mode" = api ]; then
  # No echo: the command text is not part of its output. No ONLCR: output keeps its
  # own line endings. -icanon: lines longer than the 4 KiB canonical buffer get through.
  stty -echo -onlcr -icanon 2>/dev/null
  PS1='\[\e]133;A;'"$__sbx_n"'\a\]'
  __sbx_prompt() {
    local s=$?
    if [ "$__sbx_active" = 1 ]; then
      __sbx_active=0
      printf '\e]133;D;%s;%s\a' "$s" "$__sbx_n"
    fi
  }
  # stdin is /dev/null: an agent has no keyboard, `read` must not hang until the timeout.
  __sbx_run() { __sbx_active=1; printf '\e]133;C;%s\a' "$__sbx_n"; eval "$1" </dev/null; }
else
  PS1='\[\e]133;A;'"$__sbx_n"'\a\]\[\e[1;32m\]sandbox\[\e[0m\]:\w\$ '
  # The subscript assignment runs in the shell itself (not a subshell) when PS0 is
  # expanded, so it marks "a command was read" without a fork.
  PS0='${__sbx_z[__sbx_active=1]}\[\e]133;C;'"$__sbx_n"'\a\]'
  __sbx_prompt() {
    local s=$? c
    if [ "$__sbx_active" = 1 ]; then
      __sbx_active=0
      # `history 1`, not `fc -ln -1`: in a command substitution fc lags one entry.
      c=$(HISTTIMEFORMAT= history 1)
      read -r _ c <<<"$c"
      c=${c//[$'\a\e']/}
      printf '\e]133;D;%s;%s;%s\a' "$s" "$__sbx_n" "$c"
    fi
  }
fi
PROMPT_COMMAND=__sbx_prompt
cd "${SANDBOX_WORKDIR:-$HOME}" 2>/dev/null
