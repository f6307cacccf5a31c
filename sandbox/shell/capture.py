"""A bounded record of a command's output: its head and its tail within a byte cap.

Used by the shell's readers and by `execute` and `wrapper` for their own streams.
"""

from __future__ import annotations


class Capture:
    """Keeps the head and tail of a command's output within `cap` bytes."""

    def __init__(self, cap: int) -> None:
        self.cap = max(cap, 64)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        room = self.cap // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            excess = len(self.tail) - self.cap // 2
            if excess > 4 * self.cap:  # trim rarely: slicing is O(n)
                del self.tail[:excess]

    def result(self) -> tuple[bytes, bool]:
        keep = self.cap // 2
        tail = bytes(self.tail[-keep:]) if len(self.tail) > keep else bytes(self.tail)
        if self.total <= len(self.head) + len(tail):
            return bytes(self.head) + tail, False
        cut = self.total - len(self.head) - len(tail)
        note = f"\n[... {cut} bytes not recorded: over the profile's max_output_bytes ...]\n"
        return bytes(self.head) + note.encode() + tail, True
