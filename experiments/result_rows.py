"""Result rows on disk: one JSON list per benchmark, merged row by row and written whole, and the README blocks
that a report regenerates from them."""

from __future__ import annotations

import json
from pathlib import Path


def write_whole(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it into place: never a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def merge_row(path: str | Path, row: dict, key: str = "folder") -> None:
    """Replace the row with the same `key` (or add it)."""
    path = Path(path)
    rows = json.loads(path.read_text()) if path.exists() else []
    rows = [r for r in rows if r.get(key) != row[key]] + [row]
    write_whole(path, json.dumps(rows, indent=1) + "\n")


def write_readme_block(readme: str | Path, markers: tuple[str, str], lines: list[str]) -> bool:
    """Rewrite the README's text between `markers` (left alone, and False, where it has none)."""
    readme = Path(readme)
    text = readme.read_text() if readme.exists() else ""
    begin, end = markers
    if begin not in text or end not in text:
        return False
    head, rest = text.split(begin, 1)
    write_whole(readme, head + "\n".join([begin, "", *lines, "", end]) + rest.split(end, 1)[1])
    return True
