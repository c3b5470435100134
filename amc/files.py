"""The files users hand amc: text read in one line's error when it is missing, a folder or not UTF-8, and output
paths checked before anything is written to them."""

from __future__ import annotations

from pathlib import Path

from amc.errors import AmcError


def read_user_text(path: str | Path, what: str, fix: str) -> str:
    """The UTF-8 text of the file at `path`; `what` names it ("policy file"), `fix` says how to make a good one."""
    path = Path(path)
    if path.is_dir():
        raise AmcError(f"{what} {path} is a directory, not a file; {fix}")
    if not path.is_file():
        raise AmcError(f"{what} {path} does not exist; {fix}")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise AmcError(
            f"{what} {path} is not UTF-8 text (byte {exc.start} is {exc.object[exc.start]:#04x}); {fix}"
        ) from None
    except OSError as exc:
        raise AmcError(f"cannot read {what} {path} ({exc.strerror}); {fix}") from None


def check_output_file(path: str | Path) -> Path:
    """`path` as a file to write: refused in one line where it is an existing folder."""
    if not str(path).strip():
        raise AmcError("the file to write has an empty name; pass one, e.g. --out student.pt")
    path = Path(path)
    if path.is_dir():
        raise AmcError(f"{path} is a folder; name a file to write, e.g. {path / 'student.pt'}")
    return path


def refuse_overwriting_inputs(out: str | Path, **inputs: str | Path | None) -> None:
    """Raise if `out` is any of the named inputs (`teacher=...`), so a typo cannot replace a teacher."""
    target = Path(out).resolve()
    for name, path in inputs.items():
        if path is not None and Path(path).resolve() == target:
            raise AmcError(f"--out {out} is also the --{name.replace('_', '-')}; write the result to another file")
