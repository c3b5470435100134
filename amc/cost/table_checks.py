"""Field checks for latency tables read from disk: a damaged or hand-edited table is refused in one line when it
is loaded, never later inside a prediction."""

from __future__ import annotations

import math
from pathlib import Path

from amc.errors import AmcError


def whole(value, least: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def finite(value, least: float = 0.0) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= least


def whole_list(value, least: int = 1) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(whole(v, least) for v in value)


def require(ok: bool, path: str | Path, what: str) -> None:
    if not ok:
        raise AmcError(f"{path} is a damaged latency table ({what}); build it again with `amc profile-latency`")
