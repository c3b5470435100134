"""A short, derandomized run of the input fuzzer (tests/fuzz_inputs.py): mutated files of every kind amc reads and
odd flag values end in exit 0, or exit 2 with one line, and change no file that was there. The long run is
`python experiments/fuzz_inputs.py run`."""

import pytest
from fuzz_inputs import cases, describe, fuzz_workspace, run
from hypothesis import HealthCheck, given, settings

SHORT_BUDGET = 40


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    return fuzz_workspace(tmp_path_factory.mktemp("fuzz"))


def test_every_fuzzed_input_ends_in_one_line_or_success(paths, tmp_path_factory):
    folder = tmp_path_factory.mktemp("case")

    @settings(max_examples=SHORT_BUDGET, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=cases(paths))
    def one_line_or_success(case):
        outcome = run(case, paths, folder)
        assert outcome.ok, f"{case.label}: {case.argv}: {describe(outcome)}"

    one_line_or_success()


def test_the_fuzzer_notices_a_traceback_and_a_changed_file(paths, tmp_path, monkeypatch):
    """The property can fail: a command that raises, and one that rewrites its input, are both caught."""
    from fuzz_inputs import Case

    import amc.commands.apply

    monkeypatch.setattr(amc.commands.apply, "check_policy_matches", lambda *a, **k: 1 / 0)
    argv = ["apply", "--teacher", "{teacher}", "--policy", "{policy}", "--out", "{tmp}/s.pt"]
    outcome = run(Case("a crash", argv), paths, tmp_path / "crash")
    assert not outcome.ok and "ZeroDivisionError" in describe(outcome)
    monkeypatch.undo()
    rewrite = ["baseline", "uniform", "--teacher", "{teacher}", "--budget", "flops=0.5", "--out", "{tmp}/p.json"]
    outcome = run(Case("a rewrite", rewrite, {"p.json": b"{}"}), paths, tmp_path / "rewrite")
    assert not outcome.ok and outcome.changed
