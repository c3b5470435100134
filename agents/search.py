"""`amc search`: run a searcher (DDPG/TD3/SAC, random or uniform) on a `CompressionEnv` and keep the best
student. Everything a run writes lives in its run folder, so `--resume RUN_DIR` can pick it up."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.logger import configure as configure_logger
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import VectorizedActionNoise

from agents import checkpoint as agent_checkpoint
from agents.blackbox import BLACKBOX_AGENTS, OptunaSearcher, import_optuna
from agents.buffers import CREDIT_BASELINES
from agents.callbacks import EpisodeCallback, EpisodeRecorder, PeriodicCheckpoint, write_json
from agents.cli_config import dump_config
from agents.config import SearchConfig, flat_config
from agents.ddpg import ALGORITHMS, make_agent
from agents.noise import TruncatedNormalDecayNoise, shared_schedule
from agents.vec_env import BatchedEvaluationVecEnv
from agents.workers import WorkerSpec, check_ray_address, resolve_backend, start_workers, worker_threads
from amc.checkpoint import load_checkpoint, package_versions
from amc.commands.common import load_data_for
from amc.commands.evaluate import deployed_report, evaluate_report
from amc.compress.policy import CompressionPolicy, model_fingerprint
from amc.compress.student import apply_policy, model_from_checkpoint, save_student
from amc.cost.budget import Budget
from amc.cost.latency import load_latency_table, resolve_round_to
from amc.cost.predicted import CostModel
from amc.data import DataSplits
from amc.deploy.runtimes import Target
from amc.device import resolve_device
from amc.errors import AmcError
from amc.evaluate.baselines import check_global_settings, global_pruning, random_policy, uniform
from amc.evaluate.evaluator import KD_CACHE_LIMIT_BYTES, CachedEvaluator, CandidateEvaluator, EvaluationSettings
from amc.input_check import check_model_takes
from amc.train.distill import finetune
from amc.train.loop import evaluate_accuracy
from amc.train.precision import resolve_precision
from amc.train.settings import FinetuneSettings, teacher_optimizer
from envs.compression import CompressionEnv

ONE_SHOT = ("uniform", "global")
"""Deterministic searchers: one episode plays their policy."""
SEARCHERS = (*ALGORITHMS, *BLACKBOX_AGENTS, "random", "random-actions", *ONE_SHOT)
AGENT_FILE, BUFFER_FILE = "agent.pt", "replay_buffer.npz"


def new_run_dir(cfg: SearchConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(cfg.run.out_dir) / f"{cfg.run.name}-{stamp}"
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = Path(cfg.run.out_dir) / f"{cfg.run.name}-{stamp}-{suffix}"
    run_dir.mkdir(parents=True)
    return run_dir


def latency_table_of(cfg: SearchConfig):
    """The search's latency table, checked against its runtime and precision; None without one."""
    env = cfg.env
    return load_latency_table(env.latency_table, env.runtime, env.runtime_precision) if env.latency_table else None


def evaluation_settings(cfg: SearchConfig) -> EvaluationSettings:
    """The config's evaluation section as the evaluator's settings, with the runtime it scores in."""
    deployed, env, evaluation = {}, cfg.env, cfg.evaluation
    if evaluation.reward_in_runtime and (env.runtime, env.runtime_precision) != ("eager", "fp32"):
        Target(env.runtime, env.runtime_precision)  # a bad name is one line here
        table = latency_table_of(cfg)
        deployed = {"runtime": env.runtime, "runtime_precision": env.runtime_precision,
                    "activation_type": getattr(table, "activation_type", None) or "uint8"}  # fmt: skip
    return EvaluationSettings(eval_samples=evaluation.eval_samples, recalibrate_batches=evaluation.recalibrate_batches,
                              finetune_steps=evaluation.finetune_steps, reconstruct=evaluation.reconstruct,
                              precision=evaluation.precision, **deployed)  # fmt: skip


def make_env(cfg: SearchConfig, teacher: torch.nn.Module, data: DataSplits,
             evaluator: CachedEvaluator | None = None) -> CompressionEnv:  # fmt: skip
    table, env = latency_table_of(cfg), cfg.env
    return CompressionEnv(
        teacher, data, Budget.parse(env.budget), mode=env.mode, reward=env.reward, evaluation=evaluation_settings(cfg),
        latency_table=table, min_keep=env.min_keep, max_sparsity=env.max_sparsity, min_bits=env.min_bits,
        max_bits=env.max_bits, round_to=resolve_round_to(env.round_to, table), evaluator=evaluator,
        embedding=env.embedding,
    )  # fmt: skip


def load_teacher_and_data(cfg: SearchConfig, teacher_blob: dict) -> tuple[torch.nn.Module, DataSplits]:
    teacher = model_from_checkpoint(teacher_blob).to(resolve_device(cfg.run.device))
    data = load_data_for(teacher_blob, cfg.dataset, cfg.data_dir, None, checkpoint=cfg.teacher)
    check_model_takes(teacher, data.input_shape, data.name)
    return teacher, data


def build_env(cfg: SearchConfig, teacher_blob: dict) -> CompressionEnv:
    """One env that evaluates in this process (for `amc policy predict` and scripts)."""
    return make_env(cfg, *load_teacher_and_data(cfg, teacher_blob))


def start_evaluator(cfg: SearchConfig, backend: str, teacher_blob: dict, teacher, data: DataSplits) -> CachedEvaluator:
    """The search's shared evaluator: in this process (`serial`) or on `cfg.run.workers` local or Ray workers."""
    threads = worker_threads(backend, cfg.run.workers, cfg.run.worker_threads)
    settings = evaluation_settings(cfg)
    cost_model = CostModel(teacher, data.input_shape)
    if backend == "serial":
        torch.set_num_threads(threads)
        backend_impl = CandidateEvaluator(teacher, data, settings, cost_model=cost_model)
    else:
        spec = WorkerSpec(teacher_blob, data, settings, cfg.run.device, threads)
        backend_impl = start_workers(backend, spec, cfg.run.workers, cfg.run.ray_address)
    print(f"search: backend {backend}, {cfg.run.workers} worker(s) x {threads} thread(s), "
          f"precision {cfg.evaluation.precision}", flush=True)  # fmt: skip
    if settings.finetune_steps and not settings.cache_bytes(data.input_shape, data.num_classes)["kd_batches"]:
        print(f"search: the reward's {settings.finetune_steps} KD batches and teacher logits exceed "
              f"{KD_CACHE_LIMIT_BYTES >> 20} MiB a worker, so they are drawn again (the teacher run) for each "
              "candidate", flush=True)  # fmt: skip
    return CachedEvaluator(backend_impl, cost_model.pieces)


def play(env: CompressionEnv, actions_for_step) -> dict:
    """One episode with actions from `actions_for_step(t, obs)`; returns the final info."""
    obs, _ = env.reset()
    for t in range(len(env.steps)):
        obs, _, terminated, _, info = env.step(np.asarray([actions_for_step(t, obs)], dtype=np.float32))
        if terminated:
            return info
    raise RuntimeError("episode did not terminate")


def play_round(vec_env: BatchedEvaluationVecEnv, actions: np.ndarray) -> list[dict]:
    """One episode per env, env i playing `actions[i, t]` at step t; returns the N final infos."""
    vec_env.reset()
    for t in range(actions.shape[1]):
        _, _, dones, infos = vec_env.step(actions[:, t : t + 1].astype(np.float32))
    if not all(dones):
        raise RuntimeError("episodes did not terminate together")
    return infos


def base_noise(agent) -> TruncatedNormalDecayNoise | None:
    noise = getattr(agent, "action_noise", None)
    if isinstance(noise, VectorizedActionNoise):
        noise = noise.base_noise
    return noise if isinstance(noise, TruncatedNormalDecayNoise) else None


def save_agent_state(agent, cfg: SearchConfig, run_dir: Path, state: dict) -> None:
    """The agent, its replay buffer (each replaced atomically, neither a pickle) and its noise schedule."""
    agent_checkpoint.save_agent(agent, run_dir / AGENT_FILE, cfg.agent.algorithm)
    agent_checkpoint.save_replay_buffer(agent.replay_buffer, run_dir / BUFFER_FILE)
    noise = base_noise(agent)
    state["noise"] = noise.state() if noise is not None else None


def read_saved_agent(cfg: SearchConfig, run_dir: Path | None) -> tuple[dict | None, dict | None]:
    """The agent (and replay buffer) a search starts from: its run folder's on resume, else `init_agent`'s.
    Read, and refused in one line if damaged or crafted, before the search writes anything."""
    if cfg.agent.algorithm not in ALGORITHMS:
        return None, None
    if run_dir is None:
        return (agent_checkpoint.load_agent(cfg.agent.init_agent) if cfg.agent.init_agent else None), None
    agent_path, buffer_path = run_dir / AGENT_FILE, run_dir / BUFFER_FILE
    if not agent_path.exists():
        if (run_dir / "agent.zip").exists():
            raise AmcError(f"{run_dir} was saved by an older amc as agent.zip, a pickle that amc no longer loads; "
                           "start a new search")  # fmt: skip
        return None, None
    if not buffer_path.exists() and not cfg.run.resume_without_buffer:
        raise AmcError(f"{run_dir} has its agent but not its replay buffer ({BUFFER_FILE}), so the agent would "
                       "resume with an empty memory; add --set resume_without_buffer=true to go on so")  # fmt: skip
    buffer = agent_checkpoint.read_replay_buffer(buffer_path) if buffer_path.exists() else None
    return agent_checkpoint.load_agent(agent_path), buffer


def _run_rl(cfg, vec_env, steps: int, recorder, resuming: bool, saved: tuple, state: dict, save_state,
            tb_dir: Path, first_actions: list[float]) -> bool:  # fmt: skip
    """Train the SB3 agent for the remaining episodes, saving every `checkpoint_every`; True if interrupted.
    `first_actions` (`init_policy`'s) are env 0's first episode. SB3's own metrics (actor and critic losses,
    learning rates) go to TensorBoard under `train/`."""
    saved_agent, saved_buffer = saved
    agent = make_agent(vec_env, steps, cfg)
    if resuming and saved_agent is not None:
        agent_checkpoint.restore_agent(agent, saved_agent)
        if saved_buffer is not None:
            agent_checkpoint.fill_replay_buffer(agent.replay_buffer, saved_buffer)
        if state.get("noise") is not None:
            noise = TruncatedNormalDecayNoise(cfg.agent.noise_sigma, cfg.agent.noise_decay, cfg.agent.warmup_episodes)
            noise.load_state(state["noise"])
            agent.action_noise = noise if vec_env.num_envs == 1 else shared_schedule(noise, vec_env.num_envs)
    elif saved_agent is not None:
        warm_start(agent, saved_agent, cfg.agent.init_agent)
    agent.start_actions = list(first_actions)
    remaining = cfg.agent.episodes - recorder.episodes
    callbacks = [EpisodeCallback(recorder), PeriodicCheckpoint(recorder, cfg.run.checkpoint_every, save_state)]
    interrupted = False
    try:
        if remaining > 0:
            agent.set_logger(configure_logger(str(tb_dir), ["tensorboard"]))
            agent.learn(total_timesteps=remaining * steps, callback=callbacks, reset_num_timesteps=not resuming,
                        log_interval=1)  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
    finally:
        save_state(agent)
    return interrupted


def teacher_fields(teacher_blob: dict, teacher) -> dict:
    """The policy fields that tie a policy to its teacher: architecture, number of classes, fingerprint."""
    arch = teacher_blob["arch"]
    return {"architecture": arch["name"], "num_classes": arch["num_classes"], "fingerprint": model_fingerprint(teacher)}


def stamp_policy(policy: CompressionPolicy, teacher_blob: dict, teacher) -> CompressionPolicy:
    """Record which teacher a policy belongs to and the versions that made it."""
    for key, value in teacher_fields(teacher_blob, teacher).items():
        setattr(policy, key, value)
    policy.metadata["versions"] = package_versions()
    return policy


def warm_start(agent, saved: dict, path: str | Path) -> None:
    """Copy actor and critic (and their targets) from a saved agent (`load_agent(path)`). The observation is
    AMC's per-layer embedding, normalized per model, so an agent from another budget or model fits."""
    if tuple(saved["observation_shape"]) != agent.observation_space.shape:
        raise AmcError(f"{path} observes {tuple(saved['observation_shape'])}, this env {agent.observation_space.shape}")
    try:
        agent.policy.load_state_dict(saved["parameters"]["policy"])
    except RuntimeError as exc:
        raise AmcError(f"{path} has other network sizes than `hidden`; set hidden to the saved agent's") from exc


def init_policy_actions(cfg, env: CompressionEnv) -> list[float]:
    """The per-step actions that play `cfg.agent.init_policy` in this env: a one-shot searcher's policy (`global`,
    `uniform`), made here for this teacher and budget, or a saved channel policy's keep ratios."""
    if any(step.stage != "channel" for step in env.steps):
        raise AmcError(f"init_policy {cfg.agent.init_policy}: a search starts from a policy in channel mode only; "
                       "drop init_policy")  # fmt: skip
    if cfg.agent.init_policy in ONE_SHOT:
        return _scripted_actions(
            replace(cfg, agent=replace(cfg.agent, algorithm=cfg.agent.init_policy)),
            env,
            np.random.default_rng(cfg.agent.seed),
        )
    return policy_actions(cfg.agent.init_policy, env)


def policy_actions(path: str | Path, env: CompressionEnv) -> list[float]:
    """The per-step actions that play a saved channel policy (its keep ratios) in this env."""
    policy = CompressionPolicy.load(path)
    if policy.fingerprint and policy.fingerprint != model_fingerprint(env.teacher):
        raise AmcError(f"init_policy {path} was made for another teacher; make one for this teacher with "
                       "`amc baseline global`")  # fmt: skip
    missing = [step.name for step in env.steps if step.name not in policy.keep_ratios]
    if missing:
        raise AmcError(f"init_policy {path} has no keep ratio for {missing[0]}; make it for this teacher")
    return env.values_to_actions([policy.keep_ratios[step.name] for step in env.steps])


def _scripted_values(cfg, env: CompressionEnv, rng: np.random.Generator) -> list[float] | None:
    """Per-step values of a hand-crafted policy: `uniform`, `global`, or `random` (random keep ratios scaled together
    to the budget, AMC's random-search baseline). None means: play uniformly random actions instead
    (`random-actions`, or `random` in modes and budgets that `random_policy` does not cover)."""
    budget = Budget.parse(cfg.env.budget)
    channel_only = cfg.env.mode == "channel"
    if cfg.agent.algorithm in ONE_SHOT and not channel_only:
        raise AmcError(f"the {cfg.agent.algorithm} baseline covers channel mode only; use mode channel")
    if cfg.agent.algorithm == "uniform":
        policy = uniform(env.cost_model, budget, round_to=env.round_to, min_keep=cfg.env.min_keep)
    elif cfg.agent.algorithm == "global":
        policy = global_pruning(env.teacher, env.data.input_shape, env.cost_model, budget,
                                importance=cfg.agent.global_importance, data=env.data, round_to=env.round_to,
                                max_pruning_ratio=min(cfg.agent.max_pruning_ratio, 1.0 - cfg.env.min_keep))  # fmt: skip
    elif cfg.agent.algorithm == "random" and channel_only:
        policy = random_policy(env.cost_model, budget, rng, round_to=env.round_to, min_keep=cfg.env.min_keep)
    else:
        return None
    return [policy.keep_ratios[s.name] for s in env.steps]


def _scripted_actions(cfg, env: CompressionEnv, rng: np.random.Generator) -> list[float]:
    values = _scripted_values(cfg, env, rng)
    if values is None:
        return list(rng.uniform(-1.0, 1.0, len(env.steps)))
    return env.values_to_actions(values)


def _run_rounds(cfg, vec_env: BatchedEvaluationVecEnv, recorder, save_state, next_actions, after_round) -> bool:
    """Play rounds of N episodes with `next_actions()` (shape N x steps) until the episode total, passing each
    round's final infos to `after_round`; save every `checkpoint_every` episodes; True if interrupted."""
    try:
        while recorder.episodes < recorder.total_episodes:
            before = recorder.episodes
            infos = play_round(vec_env, next_actions())
            after_round(infos)
            for info in infos:
                recorder.on_episode(info)
            if (
                cfg.run.checkpoint_every
                and recorder.episodes // cfg.run.checkpoint_every > before // cfg.run.checkpoint_every
            ):
                save_state()
    except KeyboardInterrupt:
        return True
    finally:
        save_state()
    return False


def _run_scripted(cfg, vec_env: BatchedEvaluationVecEnv, recorder, state: dict, save_state) -> bool:
    """Uniform, random search or random actions, through the same env and logging, N episodes at a time."""
    rng = np.random.default_rng(cfg.agent.seed)
    if state.get("rng") is not None:
        rng.bit_generator.state = state["rng"]
    env = vec_env.envs[0].unwrapped

    def next_actions() -> np.ndarray:
        return np.asarray([_scripted_actions(cfg, env, rng) for _ in range(vec_env.num_envs)])

    def after_round(infos) -> None:
        state["rng"] = rng.bit_generator.state

    return _run_rounds(cfg, vec_env, recorder, save_state, next_actions, after_round)


def _run_blackbox(cfg, vec_env: BatchedEvaluationVecEnv, recorder, state: dict, save_state) -> bool:
    """TPE or CMA-ES (Optuna) through the same env and logging, N episodes (trials) at a time."""
    steps = len(vec_env.envs[0].unwrapped.steps)
    searcher = OptunaSearcher(
        cfg.agent.algorithm, steps, cfg.agent.seed, cfg.agent.warmup_episodes, state.setdefault("trials", [])
    )
    return _run_rounds(cfg, vec_env, recorder, save_state, lambda: searcher.ask(vec_env.num_envs),
                       lambda infos: searcher.tell([info["reward"] for info in infos]))  # fmt: skip


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM, and a SIGINT that a non-interactive shell set to ignored for a background job, stop the
    search like Ctrl-C does: it saves its state and can be resumed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _final_student(cfg, evaluator: CandidateEvaluator, teacher_blob: dict, run_dir: Path,
                   policy: CompressionPolicy) -> dict:  # fmt: skip
    """Build, report and save the best student. Teacher and student are measured alike, on the search's device."""
    data, teacher = evaluator.data, evaluator.teacher
    options = {"samples": cfg.run.report_samples, "latency_repeats": cfg.run.report_latency_repeats}
    raw = apply_policy(teacher, policy, evaluator.input_shape, validate=False)
    without_recalibration = {
        split: evaluate_accuracy(raw, data, split, limit=cfg.run.report_samples) for split in ("test", "val")
    }
    student = evaluator.build_student(policy, short_finetune=False)
    before = evaluate_report(student, data, **options)  # BN-recalibrated only, whatever the reward fine-tuned
    reward_finetune = {}
    if evaluator.settings.finetune_steps:
        evaluator.short_finetune(student)
        reward_finetune["student_after_reward_finetune"] = evaluate_report(student, data, **options)
    after = reward_finetune.get("student_after_reward_finetune", before)
    if cfg.run.final_finetune_epochs:
        settings = FinetuneSettings(
            epochs=cfg.run.final_finetune_epochs, precision=cfg.evaluation.precision, seed=cfg.agent.seed
        ).resolved(teacher_optimizer(teacher_blob))
        finetune(student, teacher, data, settings, device=evaluator.device)
        after = evaluate_report(student, data, **options)
    teacher_report = evaluate_report(teacher, data, **options)
    student = student.cpu()
    save_student(run_dir / "student.pt", student, teacher_blob, policy, metrics=after)
    ratios = {f"{k}_ratio": after[k] / teacher_report[k] for k in ("flops", "params", "size_bytes")}
    ratios["speedup_b1"] = teacher_report["latency_ms_b1"] / after["latency_ms_b1"]
    ratios["speedup_b128"] = teacher_report["latency_ms_b128"] / after["latency_ms_b128"]
    deployed = {}
    if cfg.env.runtime != "eager" or cfg.env.runtime_precision != "fp32":  # accuracy and speed where it will run
        deployed["deployed"] = deployed_report(
            student, data, cfg.env.runtime, cfg.env.runtime_precision, reference=teacher
        )
    return {
        "teacher": teacher_report,
        "student_without_bn_recalibration": without_recalibration,
        "student_before_finetune": before,
        **reward_finetune,
        "student": after,
        **ratios,
        **deployed,
    }


def read_search_state(path: Path) -> dict:
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AmcError(f"{path} is not valid JSON ({exc}); the run cannot resume from it, start a new search") from None
    if not isinstance(state, dict):
        raise AmcError(f"{path} is not a search state; the run cannot resume from it, start a new search")
    problem = agent_checkpoint.state_problem(state)
    if problem:
        raise AmcError(f"{path} is damaged ({problem}); the run cannot resume from it, start a new search")
    return state


def run_search(cfg: SearchConfig, resume_dir: str | Path | None = None) -> dict:
    """Run (or resume) a search; returns the results that are also written to results.json. Bad settings,
    a missing Ray or an unreachable cluster fail before anything is written."""
    if cfg.agent.algorithm not in SEARCHERS:
        raise AmcError(f"unknown agent {cfg.agent.algorithm!r}; choose one of {', '.join(SEARCHERS)}")
    if cfg.agent.credit_baseline not in CREDIT_BASELINES:
        raise AmcError(f"credit_baseline is {cfg.agent.credit_baseline!r}; use one of {', '.join(CREDIT_BASELINES)}")
    if "global" in (cfg.agent.algorithm, cfg.agent.init_policy):
        check_global_settings(cfg.agent.global_importance, cfg.agent.max_pruning_ratio)
    if cfg.agent.init_policy:
        if cfg.agent.algorithm not in ALGORITHMS:
            raise AmcError(
                f"init_policy starts a {', '.join(ALGORITHMS)} search, not {cfg.agent.algorithm}; drop init_policy"
            )
        if cfg.agent.init_policy not in ONE_SHOT:
            CompressionPolicy.load(
                cfg.agent.init_policy
            )  # a missing or malformed file fails before anything is written
    backend = resolve_backend(cfg.run.backend, cfg.run.workers)
    if cfg.agent.algorithm in BLACKBOX_AGENTS:
        import_optuna()
    if backend == "ray":
        check_ray_address(cfg.run.ray_address)
    resuming = resume_dir is not None
    state_path = Path(resume_dir or ".") / "search_state.json"
    state = read_search_state(state_path) if resuming and state_path.exists() else {}
    if resuming and cfg.agent.algorithm in ALGORITHMS and state.get("workers", 1) != cfg.run.workers:
        raise AmcError(f"{resume_dir} was searched with workers={state.get('workers', 1)} and its replay buffer "
                       f"has that many envs; resume with --set workers={state.get('workers', 1)}")  # fmt: skip
    saved = read_saved_agent(cfg, Path(resume_dir) if resuming else None)
    teacher_blob = load_checkpoint(cfg.teacher)
    torch.manual_seed(cfg.agent.seed)
    teacher, data = load_teacher_and_data(cfg, teacher_blob)
    cfg.evaluation.precision = resolve_precision(
        cfg.evaluation.precision, resolve_device(cfg.run.device), announce=True
    )
    evaluator = start_evaluator(cfg, backend, teacher_blob, teacher, data)
    run_dir = None
    try:
        vec_env = BatchedEvaluationVecEnv(
            [lambda: Monitor(make_env(cfg, teacher, data, evaluator)) for _ in range(cfg.run.workers)], evaluator
        )
        vec_env.seed(cfg.agent.seed)
        first_actions = []  # a mismatch fails before anything is written
        if cfg.agent.init_policy and not resuming:
            first_actions = init_policy_actions(cfg, vec_env.envs[0].unwrapped)
        best, steps = state.get("recorder", {}).get("best_info"), len(vec_env.envs[0].unwrapped.steps)
        if resuming and best is not None and len(best["values"]) != steps:
            raise AmcError(f"{resume_dir}'s best episode has {len(best['values'])} steps, this search {steps}; "
                           "resume with the settings it was saved with")  # fmt: skip
        if resuming and saved[0] is not None:  # the saved agent and buffer fit this search, or nothing is written
            agent_checkpoint.restore_agent(make_agent(vec_env, steps, cfg), saved[0])
            if saved[1] is not None:
                agent_checkpoint.check_buffer_fits(saved[1], max(cfg.agent.episodes * steps, cfg.agent.batch_size),
                                                   cfg.run.workers, vec_env.observation_space.shape[0])  # fmt: skip
        run_dir = Path(resume_dir) if resuming else new_run_dir(cfg)
        dump_config(cfg, run_dir / "config.yaml")
        results = _search(cfg, backend, vec_env, teacher_blob, run_dir, resuming, saved, state, first_actions)
    except Exception as exc:
        if run_dir is not None and not resuming and saved_episodes(run_dir) == 0:
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing to resume: leave no half-written run folder
        elif run_dir is not None and not isinstance(exc, AmcError):  # an AmcError is its own one line
            print(f"the search failed after {saved_episodes(run_dir)} episodes, which are saved: resume with "
                  f"`amc search --resume {run_dir}`", file=sys.stderr)  # fmt: skip
        raise
    finally:
        evaluator.close()
    return results


def saved_episodes(run_dir: Path) -> int:
    """Episodes a run folder's search_state.json holds (0 where there is none or it cannot be read)."""
    try:
        return int(json.loads((run_dir / "search_state.json").read_text())["recorder"]["episodes"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _search(cfg, backend: str, vec_env: BatchedEvaluationVecEnv, teacher_blob: dict, run_dir: Path,
            resuming: bool, saved: tuple, state: dict, first_actions: list[float]) -> dict:  # fmt: skip
    from torch.utils.tensorboard import SummaryWriter

    env: CompressionEnv = vec_env.envs[0].unwrapped
    writer = SummaryWriter(str(run_dir / "tb"))
    if not resuming:
        table = "\n".join(["|key|value|", "|-|-|", *(f"|{k}|{v}|" for k, v in flat_config(cfg).items())])
        writer.add_text("hyperparameters", table)
    metadata = {
        "mode": cfg.env.mode, "budget": dict(Budget.parse(cfg.env.budget).items()), "reward": cfg.env.reward,
        "searcher": cfg.agent.algorithm,
        "search_config": flat_config(cfg), "teacher_accuracy_val_subset": env.teacher_accuracy,
    }  # fmt: skip
    recorder = EpisodeRecorder(writer, run_dir, [s.name for s in env.steps], [s.stage for s in env.steps], metadata,
                               cfg.agent.episodes if cfg.agent.algorithm not in ONE_SHOT else 1, state.get("recorder"),
                               teacher_fields(teacher_blob, env.teacher))  # fmt: skip
    started = time.perf_counter()
    earlier_seconds, earlier_env_seconds = state.get("seconds", 0.0), state.get("env_seconds", 0.0)
    earlier_evaluations, earlier_evaluation_seconds = state.get("evaluations", 0), state.get("evaluation_seconds", 0.0)
    state_path = run_dir / "search_state.json"

    def save_state(agent=None) -> None:
        if agent is not None:
            save_agent_state(agent, cfg, run_dir, state)
        state.update(recorder=recorder.state(), seconds=time.perf_counter() - started + earlier_seconds,
                     env_seconds=vec_env.seconds + earlier_env_seconds, workers=cfg.run.workers,
                     evaluations=vec_env.evaluator.evaluations + earlier_evaluations,
                     evaluation_seconds=vec_env.evaluator.evaluation_seconds + earlier_evaluation_seconds)  # fmt: skip
        write_json(state_path, state)

    with stop_on_signals():
        if cfg.agent.algorithm in ALGORITHMS:
            interrupted = _run_rl(cfg, vec_env, len(env.steps), recorder, resuming, saved, state, save_state,
                                  run_dir / "tb", first_actions)  # fmt: skip
        elif cfg.agent.algorithm in BLACKBOX_AGENTS:
            interrupted = _run_blackbox(cfg, vec_env, recorder, state, save_state)
        else:
            interrupted = _run_scripted(cfg, vec_env, recorder, state, save_state)
    elapsed, env_seconds = state["seconds"], state["env_seconds"]
    episodes_per_minute = recorder.episodes_per_minute
    recorder.close()
    if interrupted:
        writer.close()
        raise KeyboardInterrupt
    if recorder.best_info is None:
        raise AmcError("the search finished no episode; raise --set episodes")

    evaluator = vec_env.evaluator.backend
    if not isinstance(evaluator, CandidateEvaluator):  # the workers are elsewhere; the final student is built here
        evaluator = CandidateEvaluator(env.teacher, env.data, evaluation_settings(cfg), cost_model=env.cost_model)
    policy = stamp_policy(CompressionPolicy.load(run_dir / "policy.json"), teacher_blob, env.teacher)
    results = {
        "run_dir": str(run_dir), "episodes": recorder.episodes, "best_reward": recorder.best_reward,
        "best_episode": policy.metadata.get("episode"), "search_minutes": elapsed / 60.0,
        "backend": backend, "workers": cfg.run.workers, "device": str(resolve_device(cfg.run.device)),
        "precision": cfg.evaluation.precision,
        "episodes_per_minute": episodes_per_minute, "evaluations": state["evaluations"],
        "seconds_per_candidate": state["evaluation_seconds"] / max(state["evaluations"], 1),
        "worker_cache_bytes": evaluator.settings.cache_bytes(env.data.input_shape, env.data.num_classes),
        "agent_overhead": max(0.0, 1.0 - env_seconds / max(elapsed, 1e-9)),
        "best_val_subset_accuracy": recorder.best_info["accuracy"],
        "predicted": env.cost_model.policy_ratios(policy),
        **_final_student(cfg, evaluator, teacher_blob, run_dir, policy),
    }  # fmt: skip
    before = results["student_before_finetune"]
    policy.metadata["measured"] = {
        "val_accuracy": before["val_accuracy"], "test_accuracy": before["accuracy"],
        "flops_ratio": results["flops_ratio"], "params_ratio": results["params_ratio"],
        "size_ratio": results["size_bytes_ratio"],
    }  # fmt: skip
    policy.save(run_dir / "policy.json")
    write_json(run_dir / "results.json", results)
    writer.close()
    return results


def resume_config_path(run_dir: str | Path) -> Path:
    """The config.yaml of an interrupted run, which `--resume` reads instead of `--config`."""
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise AmcError(f"{run_dir} is not a run folder (no config.yaml); pass the folder `amc search` created")
    return path
