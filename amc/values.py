"""What a number read from a file may be: whole or finite, within bounds (never a bool, nan or inf). Policies,
latency tables and saved search state are checked with these before anything uses them."""

from __future__ import annotations

import math


def whole(value, least: float = -math.inf, most: float = math.inf) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and least <= value <= most


def finite(value, least: float = -math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= least
