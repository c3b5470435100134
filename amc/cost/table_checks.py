"""Field checks for latency tables read from disk: a damaged or hand-edited table is refused in one line when it
is loaded, never later inside a prediction."""

from __future__ import annotations

from pathlib import Path

from amc.errors import AmcError
from amc.values import whole


def whole_list(value, least: int = 1) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(whole(v, least) for v in value)


def require(ok: bool, path: str | Path, what: str) -> None:
    if not ok:
        raise AmcError(f"{path} is a damaged latency table ({what}); build it again with `amc profile-latency`")
