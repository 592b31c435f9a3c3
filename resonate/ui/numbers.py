"""Numbers as people read them: one decimal for levels, whole counts, a dash for "not measured"."""

from __future__ import annotations

import math
from typing import Any

DASH = "–"


def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def level(x: Any) -> str:
    """Loudness, peaks, gains: ``-14.0``; ``-∞`` for digital silence; a dash when absent."""
    if x is None:
        return DASH
    x = float(x)
    if math.isinf(x):
        return "-∞" if x < 0 else "+∞"
    if math.isnan(x):
        return DASH
    text = f"{x:.1f}"
    return "0.0" if text == "-0.0" else text


def with_unit(x: Any, unit: str) -> str:
    text = level(x)
    return text if text == DASH else f"{text} {unit}"


def count(x: Any) -> str:
    """Whole numbers with thousands separators: ``415``, ``12,004``."""
    return DASH if _missing(x) else f"{int(round(float(x))):,}"


def seconds(x: Any) -> str:
    """Durations of work: ``0.4 s``, ``12.3 s``, ``2:05`` from two minutes up."""
    if _missing(x):
        return DASH
    x = float(x)
    if x >= 120:
        s = int(round(x))
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    return f"{x:.1f} s"


def ratio(x: Any) -> str:
    """Real-time factors: two significant decimals, ``0.03×``."""
    if _missing(x):
        return DASH
    x = float(x)
    return f"{x:.2f}×" if x >= 0.1 else f"{x:.3f}×"
