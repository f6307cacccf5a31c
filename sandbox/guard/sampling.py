"""Windowed resource samples: turn one-a-second readings into "held for N seconds".

Rules stay pure, so "sustained" has to be in the evidence. A monitor keeps one
`SampleWindow` per session (per metric source) and hands each averaged sample to the
engine; `window_s` says how much history the averages cover.
"""

from __future__ import annotations

from collections import deque
from dataclasses import replace

from .evidence import ResourceSample


class SampleWindow:
    """Rolling averages of ResourceSample values over the last `span_s` seconds."""

    def __init__(self, span_s: float = 300.0) -> None:
        self.span_s = span_s
        self._items: deque[tuple[float, ResourceSample]] = deque()

    def add(self, t: float, sample: ResourceSample) -> ResourceSample:
        """Add a reading taken at time `t`; return the window's average (same source)."""
        self._items.append((t, sample))
        # Keep one reading at or before the window start so window_s can reach span_s.
        while len(self._items) > 1 and self._items[1][0] <= t - self.span_s:
            self._items.popleft()
        n = len(self._items)
        samples = [s for _, s in self._items]
        return replace(
            sample,
            cpu_percent=sum(s.cpu_percent for s in samples) / n,
            mem_bytes=int(sum(s.mem_bytes for s in samples) / n),
            pids=int(sum(s.pids for s in samples) / n),
            gpu_util=sum(s.gpu_util for s in samples) / n,
            gpu_mem_bytes=int(sum(s.gpu_mem_bytes for s in samples) / n),
            window_s=t - self._items[0][0],
        )

    def clear(self) -> None:
        self._items.clear()
