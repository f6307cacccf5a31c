"""The chain head sent off-box when a session ends (`[recording] head_hash_file`,
`head_hash_command`), so a rewrite of the whole database is detectable."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from typing import Any

from ..jail.profile import RecordingSection


def ship_head(recording: RecordingSection, session_id: str, last_seq: int, head: str,
              warn: Callable[[str], Any]) -> None:
    """Append `TIME ID SEQ HEAD` to the file and/or run the command with SANDBOX_HEAD and
    SANDBOX_SESSION set; a failure is `warn`ed (a session.warning), never raised."""
    line = f"{time.time():.3f} {session_id} {last_seq} {head}\n"
    try:
        if recording.head_hash_file:
            with open(recording.head_hash_file, "a") as fh:
                fh.write(line)
        if recording.head_hash_command:
            subprocess.run(
                recording.head_hash_command, shell=True, timeout=30, check=True,
                env={**os.environ, "SANDBOX_HEAD": head, "SANDBOX_SESSION": session_id},
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            )
    except (OSError, subprocess.SubprocessError) as e:
        warn(f"could not ship the head hash: {e}")
