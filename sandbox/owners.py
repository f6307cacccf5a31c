"""Who owns a session, and whether that owner is still alive (pid reuse included)."""

from __future__ import annotations

import os

import psutil


def start_token(pid: int) -> str:
    """A string that changes when `pid` is reused by another process."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return ""


def me() -> tuple[int, str]:
    pid = os.getpid()
    return pid, start_token(pid)


def alive(pid: int, token: str) -> bool:
    """True when the process `pid` exists and is the one that wrote `token`."""
    if pid <= 0:
        return False
    current = start_token(pid)
    if not current:
        return False
    try:
        if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return False
    return current == token
