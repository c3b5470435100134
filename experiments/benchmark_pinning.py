"""OpenVINO's thread pinning and processes that time at once. OpenVINO pins its threads to cores by default;
amc compiles unpinned (`amc.deploy.runtimes.openvino_compiled`). This measures why: each committed teacher, in
OpenVINO fp32 at batch 1 with one thread, timed alone and as two processes at once, pinned and unpinned. Run it
on an otherwise idle machine with at least two cores; `run` merges its rows (one per CPU model and teacher) into
experiments/results/pinning.json, and `report` writes pinning.md from them alone.

    python experiments/benchmark_pinning.py run
    python experiments/benchmark_pinning.py report
"""

from __future__ import annotations

import multiprocessing
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from rows import describe, merge_row, page_head, read_rows, write_whole
from script_args import run_and_report

from amc.checkpoint import load_checkpoint
from amc.compress.student import model_from_checkpoint
from amc.deploy.deployment import deploy
from amc.deploy.runtimes import Target, openvino_compiled
from amc.deploy.timing import example_batch

TARGET = Target("openvino", "fp32", batch=1, threads=1)


@dataclass
class Args:
    command: str
    teachers: list[str] = field(default_factory=lambda: ["experiments/teachers/resnet20_cifar10.pt",
                                                          "experiments/teachers/vit_tiny_cifar10.pt"])  # fmt: skip
    """The models timed (teacher checkpoints)."""
    runs: int = 400
    """Timed inferences per process, after 30 of warm-up."""
    results: str = "experiments/results/pinning.json"
    """The rows (`run` merges into them; `report` writes the page beside them)."""


def median_ms(onnx_path: str, shape: tuple, pinned: bool, runs: int, start, out) -> None:
    """One timing process: compile, wait for the others (`start`), then the median of `runs` inferences."""
    request = openvino_compiled(onnx_path, TARGET, pinned=pinned).create_infer_request()
    x = example_batch(shape, 1)
    for _ in range(30):
        request.infer({0: x})
    start.wait()
    seconds = []
    for _ in range(runs):
        began = time.perf_counter()
        request.infer({0: x})
        seconds.append(time.perf_counter() - began)
    out.put(1000 * statistics.median(seconds))


def timed_at_once(onnx_path: str, shape: tuple, pinned: bool, processes: int, runs: int) -> list[float]:
    """Each of `processes` processes' median latency (ms) while all time together."""
    spawn = multiprocessing.get_context("spawn")
    start, out = spawn.Barrier(processes), spawn.Queue()
    workers = [spawn.Process(target=median_ms, args=(onnx_path, shape, pinned, runs, start, out))
               for _ in range(processes)]  # fmt: skip
    for w in workers:
        w.start()
    medians = sorted(out.get(timeout=600) for _ in workers)
    for w in workers:
        w.join()
    return medians


def run(args: Args) -> None:
    for teacher in args.teachers:
        blob = load_checkpoint(teacher)
        shape = tuple(blob["dataset"]["input_shape"])
        with tempfile.TemporaryDirectory() as folder:
            onnx_path = str(deploy(model_from_checkpoint(blob), shape, TARGET, folder).onnx_path)
            timings = {f"{'pinned' if pin else 'unpinned'}_{n}": timed_at_once(onnx_path, shape, pin, n, args.runs)
                       for n in (1, 2) for pin in (True, False)}  # fmt: skip
        machine = describe()
        row = {"key": f"{machine['cpu']} {Path(teacher).name}", "teacher": Path(teacher).name, "runs": args.runs,
               **timings, "machine": machine, "measured_at": time.strftime("%Y-%m-%d %H:%M")}  # fmt: skip
        merge_row(args.results, row, key="key")
        print(row)


def report(results: Path) -> None:
    rows = read_rows(results, "benchmark_pinning.py run")
    lines = page_head("benchmark_pinning.py", results, "OpenVINO's thread pinning, one process and two at once",
                      "Median latency (ms) of one inference in OpenVINO (fp32, batch 1, one thread per process); "
                      "with two processes timing at once, each one's median. Two processes on two cores should "
                      "each take about what one takes alone.")  # fmt: skip
    lines += ["| machine | cores | model | alone, pinned | alone, unpinned | two at once, pinned | "
              "two at once, unpinned |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        cells = [" and ".join(f"{ms:.2f}" for ms in r[k]) for k in ("pinned_1", "unpinned_1", "pinned_2", "unpinned_2")]
        lines.append(f"| {r['machine']['cpu']} | {r['machine']['cores']} | {r['teacher']} | {' | '.join(cells)} |")
    write_whole(results.with_suffix(".md"), "\n".join(lines) + "\n")


if __name__ == "__main__":
    run_and_report(run, report, Args, __doc__)
