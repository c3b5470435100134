"""Every generated results page, regenerated from its committed rows, is the page that is committed: no figure on
a page (or in the README's generated blocks) can drift from the rows it came from."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"
# script -> the rows it reports from (its page is the same name, .md); True where it also writes a README block
REPORTS = {
    "deploy_c10.py": ("deploy.json", True),
    "compare_searchers_c10.py": ("searchers.json", True),
    "benchmark_cifar10.py": ("cifar10.json", False),
    "mixed_precision_c10.py": ("mixed_precision.json", False),
    "candidate_cost.py": ("candidate_cost.json", False),
    "global_caps_c10.py": ("global_caps.json", False),
    "credit_assignment.py": ("credit_assignment.json", False),
    "benchmark_scaling.py": ("scaling.json", False),
    "reward_proxies.py": ("reward_proxies.json", False),
    "transfer.py": ("transfer_resnet20.json", False),
    "benchmark_precision.py": ("precision.json", False),
    "benchmark_pinning.py": ("pinning.json", False),
    "benchmark_ddp.py": ("ddp.json", False),
    "attention_costs.py": ("attention_costs.json", False),
    "transformers_c10.py": ("transformers.json", False),
}


@pytest.mark.parametrize("script", REPORTS)
def test_a_page_regenerates_from_its_rows(script, tmp_path):
    rows, writes_readme = REPORTS[script]
    copy = tmp_path / "results"
    shutil.copytree(RESULTS, copy)  # the pages a report quotes and the plots it links sit beside its rows
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    argv = [sys.executable, f"experiments/{script}", "report", "--results", str(copy / rows)]
    if writes_readme:
        argv += ["--readme", str(readme)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert done.returncode == 0, done.stderr
    page = Path(rows).with_suffix(".md").name
    assert (copy / page).read_text() == (RESULTS / page).read_text(), f"{page} drifted from {rows}: run the report"
    assert readme.read_text() == (ROOT / "README.md").read_text(), "the README's generated block drifted"


RECORD = "> A record written by "


def test_every_results_page_is_generated_and_every_record_says_it_is_one():
    """experiments/results/ holds pages a report writes from rows; docs/records/ holds history nothing
    regenerates, each marked so, so a reader knows which figures can drift from today's code."""
    generated = {Path(rows).with_suffix(".md").name for rows, _ in REPORTS.values()}
    for page in sorted(RESULTS.glob("*.md")):
        assert page.name in generated, f"{page.name}: add its report to REPORTS, or move it to docs/records/"
    for record in sorted((ROOT / "docs" / "records").glob("*.md")):
        assert RECORD in record.read_text(), f"{record.name}: a record says so at its top"
