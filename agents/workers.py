"""Where candidates are evaluated: in this process, in local worker processes, or in Ray actors.

Each backend offers `evaluate_many(policies)`, `teacher_accuracy` and `close()`. A worker builds one
`amc.evaluate.evaluator.CandidateEvaluator` when it starts (the teacher and the validation batches, once) and keeps
it. The engines are the standard library's process pool and Ray; neither needs an RPC layer of ours.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

from amc.compress.policy import CompressionPolicy
from amc.compress.student import model_from_checkpoint
from amc.data import DataSplits
from amc.device import resolve_device
from amc.errors import AmcError
from amc.evaluate.evaluator import CandidateEvaluator, Evaluation, EvaluationSettings
from amc.models import TRUST_ENV

BACKENDS = ("auto", "local", "ray")
RAY_INSTALL = "pip install 'amc[ray]' (or: pip install ray==2.60.0)"
READY_TIMEOUT_S = 300.0
"""How long Ray may take to place every worker before the search gives up with one line."""


class WorkerLost(AmcError):
    """A worker died and its evaluation could not be re-run; the search stops with its state saved."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to make its `CandidateEvaluator`: the teacher checkpoint's contents, the data
    and the evaluation settings (precision already resolved), its device and its torch threads."""

    teacher_blob: dict
    data: DataSplits
    settings: EvaluationSettings
    device: str
    threads: int


def make_evaluator(spec: WorkerSpec) -> CandidateEvaluator:
    torch.set_num_threads(spec.threads)
    teacher = model_from_checkpoint(spec.teacher_blob).to(resolve_device(spec.device))
    return CandidateEvaluator(teacher, spec.data, spec.settings)


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# ----------------------------------------------------------------------------- local processes

_worker_evaluator: CandidateEvaluator | None = None
"""The evaluator of this worker process (set by `_start_local_worker`)."""


def _start_local_worker(spec: WorkerSpec, parent: int, ready) -> None:
    global _worker_evaluator
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the search's to handle: it saves, then closes the pool
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _worker_evaluator = make_evaluator(spec)
    ready.wait(timeout=READY_TIMEOUT_S)  # no worker takes a task before every worker has its evaluator


def _started(_) -> None:
    """A task every worker runs once: returns when all workers have their evaluator."""


def _exit_with_parent(parent: int) -> None:
    """A worker whose search was killed outright (kill -9) exits instead of lingering."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _evaluate_in_worker(policy: CompressionPolicy) -> Evaluation:
    return _worker_evaluator.evaluate(policy)


def _teacher_accuracy_in_worker() -> float:
    return _worker_evaluator.teacher_accuracy


class LocalWorkers:
    """`workers` processes on this machine (spawned, so each has its own torch threads and, on CUDA, its
    own context), all started and holding their evaluator before the search begins. The teacher and the
    data reach them through shared memory, not through files."""

    def __init__(self, spec: WorkerSpec, workers: int):
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")
        self.workers = workers
        self._pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_local_worker,
                                         initargs=(spec, os.getpid(), context.Barrier(workers)))  # fmt: skip
        self._call(lambda: list(self._pool.map(_started, range(workers))))  # starts every worker, now
        self._teacher_accuracy: float | None = None

    def _call(self, run):
        try:
            return run()
        except BrokenProcessPool as exc:
            raise WorkerLost("a worker process died; the search stopped with its state saved (resume with "
                             "`amc search --resume RUN_DIR`)") from exc  # fmt: skip

    def evaluate_many(self, policies: Sequence[CompressionPolicy]) -> list[Evaluation]:
        return self._call(lambda: list(self._pool.map(_evaluate_in_worker, policies)))

    @property
    def teacher_accuracy(self) -> float:
        if self._teacher_accuracy is None:
            self._teacher_accuracy = self._call(lambda: self._pool.submit(_teacher_accuracy_in_worker).result())
        return self._teacher_accuracy

    def pids(self) -> list[int]:
        return list(self._pool._processes)  # the executor has no public list of its processes

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# ----------------------------------------------------------------------------- Ray actors


class EvaluatorActor:
    """A Ray actor that holds one `CandidateEvaluator` (made once, on the actor's node)."""

    def __init__(self, spec: WorkerSpec):
        self.evaluator = make_evaluator(spec)

    def evaluate(self, policy: CompressionPolicy) -> Evaluation:
        return self.evaluator.evaluate(policy)

    def teacher_accuracy(self) -> float:
        return self.evaluator.teacher_accuracy

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise AmcError(f"backend ray needs Ray, which is not installed; {RAY_INSTALL}") from exc
    return ray


def check_ray_address(address: str | None) -> None:
    """Fail fast, in one line, on a `host:port` where no Ray head answers (`auto` is checked by Ray)."""
    if not address or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except (OSError, ValueError) as exc:
        raise AmcError(f"no Ray cluster answers at ray_address={address} ({exc}); start one with `ray start "
                       "--head` or leave ray_address unset to start a local one") from exc  # fmt: skip


class RayWorkers:
    """`workers` Ray actors. With `address` (`auto` or `host:port`) they join that cluster; otherwise a local
    Ray is started. On CUDA each asks for a share of a GPU, so several share one. Ray restarts a dead actor
    and re-runs its evaluation once; a second loss stops the search."""

    def __init__(self, spec: WorkerSpec, workers: int, address: str | None = None):
        ray = import_ray()
        check_ray_address(address)
        self.ray, self.workers = ray, workers
        self._started_ray = not ray.is_initialized()
        if self._started_ray:
            try:
                if address:
                    ray.init(address=address, log_to_driver=False)
                else:
                    cpus = max(available_cores(), workers * spec.threads)
                    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise AmcError(f"cannot start or join Ray at {address or 'a new local cluster'}: "
                               f"{str(exc).splitlines()[0][:160]}") from exc  # fmt: skip
        cluster_cpus = ray.cluster_resources().get("CPU", 0.0)
        if cluster_cpus < workers * spec.threads:  # Ray would wait for CPUs that never come
            if self._started_ray:
                ray.shutdown()
            raise AmcError(f"the Ray cluster has {cluster_cpus:g} CPUs, and workers={workers} of {spec.threads} "
                           f"thread(s) ask for {workers * spec.threads}; lower workers or add nodes")  # fmt: skip
        gpus = ray.cluster_resources().get("GPU", 0.0) if resolve_device(spec.device).type == "cuda" else 0.0
        options = {"num_cpus": spec.threads, "max_restarts": 1, "max_task_retries": 1}
        if os.environ.get(TRUST_ENV):  # the model files the user trusts, on every node
            options["runtime_env"] = {"env_vars": {TRUST_ENV: os.environ[TRUST_ENV]}}
        if gpus:
            options["num_gpus"] = min(1.0, gpus / workers)
        actor = ray.remote(EvaluatorActor).options(**options)
        self._spec_ref = ray.put(spec)  # kept alive: Ray rebuilds a restarted actor from it
        self.actors = [actor.remote(self._spec_ref) for _ in range(workers)]
        try:
            self.nodes = ray.get([a.node.remote() for a in self.actors], timeout=READY_TIMEOUT_S)
        except ray.exceptions.GetTimeoutError as exc:
            self.close()
            raise AmcError(f"Ray could not place {workers} workers of {spec.threads} CPU within "
                           f"{READY_TIMEOUT_S:.0f} s; lower workers or add nodes") from exc  # fmt: skip
        from ray.util import ActorPool

        self.pool = ActorPool(self.actors)
        self._teacher_accuracy: float | None = None

    def _call(self, run):
        try:
            return run()
        except self.ray.exceptions.RayActorError as exc:
            raise WorkerLost("a Ray worker died twice; the search stopped with its state saved (resume with "
                             "`amc search --resume RUN_DIR`)") from exc  # fmt: skip

    def evaluate_many(self, policies: Sequence[CompressionPolicy]) -> list[Evaluation]:
        return self._call(lambda: list(self.pool.map(lambda actor, p: actor.evaluate.remote(p), policies)))

    @property
    def teacher_accuracy(self) -> float:
        if self._teacher_accuracy is None:
            self._teacher_accuracy = self._call(lambda: self.ray.get(self.actors[0].teacher_accuracy.remote()))
        return self._teacher_accuracy

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        if self._started_ray:
            self.ray.shutdown()


# ----------------------------------------------------------------------------- choosing one


def resolve_backend(backend: str, workers: int) -> str:
    """`serial` (this process), `local` or `ray`; `auto` is `serial` for one worker, `local` for more."""
    if workers < 1:
        raise AmcError(f"workers is {workers}; set workers to 1 or more")
    if backend not in BACKENDS:
        raise AmcError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        return "serial" if workers == 1 else "local"
    if backend == "ray":
        import_ray()
    return backend


def worker_threads(backend: str, workers: int, requested: int | None) -> int:
    """Torch threads per worker (for `serial`, of this process): as asked, else this machine's cores shared out."""
    if requested is not None:
        if requested < 1:
            raise AmcError(f"worker_threads is {requested}; set it to 1 or more, or leave it unset")
        return requested
    if backend == "serial":
        return torch.get_num_threads()
    cores = available_cores()
    if workers > cores:
        print(f"warning: {workers} workers on {cores} cores; they will share cores and each run slower",
              file=sys.stderr)  # fmt: skip
    return max(1, cores // workers)


def start_workers(backend: str, spec: WorkerSpec, workers: int, ray_address: str | None = None):
    if backend == "serial":
        return make_evaluator(spec)
    if backend == "local":
        return LocalWorkers(spec, workers)
    return RayWorkers(spec, workers, ray_address)
