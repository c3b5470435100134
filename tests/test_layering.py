"""amc's packages stack one way: each imports only the floors below it (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

AMC = Path(__file__).resolve().parents[1] / "amc"
# a package -> the packages it may import ("base": amc's top-level modules: errors, files, data, models, ...)
MAY_IMPORT = {
    "base": {"base"},
    "compress": {"base", "compress"},
    "deploy": {"base", "compress", "deploy"},
    "cost": {"base", "compress", "deploy", "cost"},
    "train": {"base", "train"},
    "evaluate": {"base", "compress", "deploy", "cost", "train", "evaluate"},
    "commands": {"base", "compress", "deploy", "cost", "train", "evaluate", "commands"},
}


def floor_of(module: str) -> str:
    """`amc.cost.measured` -> cost; `amc.data` -> base."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[1] in MAY_IMPORT else "base"


def amc_imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] == "amc":
            if node.module == "amc":  # `from amc import cost` names a package
                out += [(node.lineno, f"amc.{a.name}.x" if a.name in MAY_IMPORT else "amc") for a in node.names]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "amc"]
    return out


MODULES = sorted(AMC.rglob("*.py"))


def test_every_package_is_placed():
    packages = {p.parent.name for p in AMC.glob("*/__init__.py")}
    assert packages == set(MAY_IMPORT) - {"base"}


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(AMC)))
def test_imports_run_one_way(path):
    module = "amc." + ".".join(path.relative_to(AMC).with_suffix("").parts)
    if module == "amc.__init__":
        return  # the facade: `amc.load_student` is imported lazily, on first use
    floor = floor_of(module)
    upward = [f"line {n}: {name}" for n, name in amc_imports(path) if floor_of(name) not in MAY_IMPORT[floor]]
    assert not upward, f"{module} ({floor}) imports a floor above it: {upward}"


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from amc.commands.apply import apply_command\nimport amc.cost.measured\n")
    found = [floor_of(name) for _, name in amc_imports(bad)]
    assert found == ["commands", "cost"]
    assert not set(found) <= MAY_IMPORT["compress"]
