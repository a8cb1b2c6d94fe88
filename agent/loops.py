"""Deprecated: the doom-loop detector is :mod:`whalebone.agent.loop_detector` (``loops`` beside
``loop``, the agent loop itself, read as a typo)."""

from __future__ import annotations

import warnings

from whalebone.agent.loop_detector import LoopDetector, LoopVerdict

warnings.warn("whalebone.agent.loops is deprecated: use whalebone.agent.loop_detector",
              DeprecationWarning, stacklevel=2)

__all__ = ["LoopDetector", "LoopVerdict"]
