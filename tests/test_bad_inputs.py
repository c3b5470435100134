"""Every row of the bad-input table (tests/bad_inputs.py, docs/bad_inputs.md): exit 2, one line, nothing changed."""

import pytest
from bad_inputs import CASES, run_case, workspace


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return workspace(tmp_path_factory.mktemp("workspace"))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(case, paths, tmp_path):
    code, err, before, after = run_case(case, paths, tmp_path / "case")
    lines = err.strip().splitlines()
    assert code == 2, err[-1500:]
    assert len(lines) == 1, err[-1500:]
    assert case.expect in lines[0] and lines[0].startswith("amc ")
    assert before.items() <= after.items(), "a file that was there changed or went missing"
