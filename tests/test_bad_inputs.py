"""Every row of the bad-input table (tests/bad_inputs.py, docs/bad_inputs.md): exit 2, one line, nothing changed;
and the page is what the cases print."""

from pathlib import Path

import pytest
from bad_inputs import CASES, case_message, page, run_case, workspace

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
ANSWERS: dict[int, tuple[int, str]] = {}  # case index -> (exit status, message as the page shows it)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_inputs")


@pytest.fixture(scope="module")
def paths(scratch, monkeypatch_module):
    monkeypatch_module.setenv("AMC_CACHE", str(scratch / "cache"))  # as the page's generator runs them
    return workspace(scratch / "work")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_exit_2(index, paths, scratch):
    case = CASES[index]
    code, err, before, after = run_case(case, paths, scratch / f"case{index}")
    ANSWERS[index] = (code, case_message(err, str(scratch)))
    lines = err.strip().splitlines()
    assert code == 2, err[-1500:]
    assert len(lines) == 1, err[-1500:]
    assert case.expect in lines[0] and lines[0].startswith("amc ")
    assert before.items() <= after.items(), "a file that was there changed or went missing"


def test_the_page_is_what_the_cases_print():
    if len(ANSWERS) < len(CASES):
        pytest.skip("compares the page only when every case ran in this session")
    assert page([ANSWERS[i] for i in range(len(CASES))]) == DOC.read_text(), (
        "docs/bad_inputs.md differs from what the cases print: run `python tests/bad_inputs.py`"
    )
