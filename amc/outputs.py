"""Where a command writes: never onto one of its own inputs."""

from __future__ import annotations

from pathlib import Path

from amc.errors import AmcError


def refuse_overwriting_inputs(out: str | Path, **inputs: str | Path | None) -> None:
    """Raise if `out` is any of the named inputs (`teacher=...`), so a typo cannot replace a teacher."""
    target = Path(out).resolve()
    for name, path in inputs.items():
        if path is not None and Path(path).resolve() == target:
            raise AmcError(f"--out {out} is also the --{name.replace('_', '-')}; write the result to another file")
