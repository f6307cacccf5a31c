#!/usr/bin/env bash
# Installs everything sandbox needs on a fresh Debian/Ubuntu machine (run as root) and a
# virtualenv in .venv. Idempotent and quiet when there is nothing to do, so the `sandbox`
# and `test` launchers call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: firejail (the jail), nftables + iproute2 (allowlist networking),
# acl + util-linux (setfacl/setpriv: the unprivileged agent user), tmux/asciinema (tests).
PKGS=(firejail nftables iproute2 acl util-linux passwd procps psmisc openssl curl openssh-client tmux
      asciinema python3 python3-venv python3-pip ca-certificates)
# Images (--image): skopeo copies them in, umoci unpacks them, bash-static is the shell
# firejail starts programs through in an image that has none of its own.
PKGS+=(skopeo umoci bash-static)
# Fast exec's helper (sandbox/jail/fastexec/sandbox-exec.c) is built here, static.
PKGS+=(gcc libc6-dev)
# `--test` (scripts/test): postgresql too, for the fleet tests' throwaway servers. Not for
# the quick start's `sandbox run`: SQLite is the default store, and Debian's package would
# start a server on every machine that only wanted a sandbox.
if [[ ${1:-} == --test ]]; then
  # mmdebstrap and busybox-static build the tests' images (no registry is reachable).
  PKGS+=(postgresql mmdebstrap busybox-static)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bootstrap: missing packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "bootstrap: apt-get install ${missing[*]}" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# A sandbox in an image runs under firejail's --chroot, which Debian ships switched off
# (`# chroot no`). Switched on here, openly: firejail still refuses a chroot directory
# that root does not own, and `sandbox doctor` reports the setting.
FJCONF=/etc/firejail/firejail.config
if [[ -f $FJCONF ]] && ! grep -qE '^[[:space:]]*chroot[[:space:]]+yes' "$FJCONF"; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "bootstrap: enabling firejail's chroot (chroot yes in $FJCONF) for sandbox --image" >&2
    sed -i -E 's/^[#[:space:]]*chroot[[:space:]]+(yes|no)[[:space:]]*$/chroot yes/' "$FJCONF"
    grep -qE '^chroot yes' "$FJCONF" || echo "chroot yes" >> "$FJCONF"
  else
    echo "bootstrap: firejail's chroot is off in $FJCONF: --image needs it (run as root)" >&2
  fi
fi

# Python >= 3.11. Prefer the system interpreter: it is readable by every user, which the
# agent user and the tests' throwaway users need (a pyenv under /root is not).
PY=""
for cand in /usr/bin/python3 /usr/bin/python3.12 /usr/bin/python3.11 "$(command -v python3 || true)"; do
  if [[ -x "$cand" ]] && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    PY="$cand"; break
  fi
done
if [[ -z "$PY" ]]; then
  echo "bootstrap: installing python3.11 (Python >= 3.11 is required)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.11 python3.11-venv >/dev/null
  PY=/usr/bin/python3.11
fi

if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
# Python packages, each set with its own stamp. `sandbox run` (scripts/sandbox) needs the
# core only (about 50 MB); `--test` (scripts/test) needs the dev tools and every adapter's
# framework and the fleet's clients too ([dev,all]: Ray, pyarrow, ... about 1.4 GB). The
# full set includes the core, so its stamp satisfies the core's.
fresh() { [[ -f $1 && ! pyproject.toml -nt $1 ]]; }
if [[ ${1:-} == --test ]]; then
  spec='.[dev,all]' stamp=.venv/.installed what="sandbox with what the tests need"
  done_already() { fresh "$stamp"; }
else
  spec='.' stamp=.venv/.installed-core what="sandbox (the core; scripts/test adds the rest)"
  done_already() { fresh "$stamp" || fresh .venv/.installed; }
fi
if ! done_already; then
  echo "bootstrap: installing $what into .venv" >&2
  # Quiet unless it fails: setuptools' editable-install warnings are noise here.
  if ! { .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip &&
         .venv/bin/python -m pip install -q --disable-pip-version-check -e "$spec"; } \
       >.venv/install.log 2>&1; then
    cat .venv/install.log >&2
    echo "bootstrap: pip install failed (log above, also in .venv/install.log)" >&2
    exit 1
  fi
  touch "$stamp"
fi

# The compiled exec helper, into its cache (/var/cache/sandbox/fastexec): cheap when it is
# there already. A failure is said, not fatal: sessions then use the Python helper.
if [[ $(id -u) -eq 0 ]]; then
  .venv/bin/python -m sandbox.jail.fastexec >/dev/null || \
    echo "bootstrap: the compiled exec helper did not build (see above): fast exec uses the Python helper" >&2
fi
