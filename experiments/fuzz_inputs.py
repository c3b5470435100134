"""The long run of the input fuzzer (tests/fuzz_inputs.py): chunks of hypothesis cases, each chunk seeded by its
index, so an interrupted run goes on where it stopped. Every case must end in exit 0, or exit 2 with one line,
and change no file that was there.

    python experiments/fuzz_inputs.py run --cases 10000      # resumable; rows in results/fuzz.json
    python experiments/fuzz_inputs.py report                 # the figures, into docs/bad_inputs.md
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rows import describe as machine
from rows import merge_row, read_rows, write_readme_block
from script_args import run_script

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fuzz_inputs import (  # noqa: E402
    FUZZ_MARKERS,  # noqa: E402
    cases,
    describe,
    fuzz_block,
    fuzz_workspace,
    run,
)


@dataclass
class Args:
    command: str = "run"
    cases: int = 10000
    """Cases in all (done chunks count)."""
    chunk: int = 500
    """Cases per chunk; a chunk is the unit that is saved and resumed."""
    results: str = "experiments/results/fuzz.json"
    doc: str = "docs/bad_inputs.md"


def run_chunk(index: int, size: int, paths: dict[str, str], folder: Path) -> dict:
    from hypothesis import HealthCheck, given, seed, settings

    labels, failures, slow, started = collections.Counter(), [], 0, time.perf_counter()

    @seed(index)
    @settings(max_examples=size, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=cases(paths))
    def one(case):
        nonlocal slow
        outcome = run(case, paths, folder)
        labels[case.label] += 1
        slow += outcome.slow
        if not outcome.ok:
            kind = "traceback" if outcome.traceback else "changed" if outcome.changed else "exit or lines"
            failures.append({"case": case.label, "argv": case.argv, "kind": kind, "what": describe(outcome)})
            print(f"FAIL {case.label}: {describe(outcome)}", flush=True)

    one()
    return {"chunk": index, "cases": sum(labels.values()), "labels": dict(labels), "failures": failures,
            "slow": slow, "seconds": time.perf_counter() - started, "machine": machine()}  # fmt: skip


def run_fuzz(args: Args) -> None:
    from tqdm import tqdm

    done = read_rows(args.results, "fuzz_inputs.py run") if Path(args.results).exists() else []
    chunks = {r["chunk"] for r in done}
    todo = [i for i in range(-(-args.cases // args.chunk)) if i not in chunks]
    with tempfile.TemporaryDirectory() as scratch:
        os.environ["AMC_CACHE"] = f"{scratch}/cache"
        paths = fuzz_workspace(Path(scratch) / "work")
        for index in tqdm(todo, desc="fuzz chunks", unit="chunk"):
            merge_row(args.results, run_chunk(index, args.chunk, paths, Path(scratch) / "case"), key="chunk")


def report(args: Args) -> None:
    rows = read_rows(args.results, "fuzz_inputs.py run")
    if not write_readme_block(args.doc, FUZZ_MARKERS, fuzz_block(rows)):
        sys.exit(f"{args.doc} has no fuzz block; regenerate it with `python tests/bad_inputs.py`")
    print(f"wrote the fuzz figures into {args.doc}")


if __name__ == "__main__":
    commands = {"run": run_fuzz, "report": report}
    run_script(lambda args: commands[args.command](args), Args, __doc__, list(commands))
