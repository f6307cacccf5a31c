"""Guard rules over command text, process execs, network attempts and samples."""

from __future__ import annotations

from . import Part


class GuardPart(Part):
    name = "guard"
