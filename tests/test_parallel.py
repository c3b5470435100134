"""Parallel search: N episodes side by side, students evaluated by local worker processes or Ray actors."""

import json
import os
import signal
import socket
import sys
import time

import numpy as np
import pytest

from agents.cli import main
from agents.noise import TruncatedNormalDecayNoise, shared_schedule
from agents.workers import LocalWorkers, RayWorkers, WorkerLost, WorkerSpec, available_cores, worker_threads
from amc.checkpoint import load_checkpoint
from amc.compress.policy import CompressionPolicy
from amc.data import load_synthetic
from amc.errors import AmcError
from amc.evaluate.evaluator import CandidateEvaluator, EvaluationSettings
from amc.models import create_model

TINY = ["--set", "warmup_episodes=2", "--set", "eval_samples=32", "--set", "recalibrate_batches=2",
        "--set", "precision=fp32", "--set", "batch_size=8"]  # fmt: skip
ARTIFACTS = ("config.yaml", "policy.json", "agent.pt", "replay_buffer.npz", "search_state.json", "student.pt",
             "results.json", "tb")  # fmt: skip


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test run (starting one takes seconds)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def search_argv(teacher_path, out_dir, backend: str, *extra: str) -> list[str]:
    return ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={out_dir}", *TINY, "--set", "workers=2",
            "--set", f"backend={backend}", *extra]  # fmt: skip


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_workers_finish_meet_the_budget_and_write_every_artifact(backend, teacher_path, tmp_path, capsys, request):
    if backend == "ray":
        request.getfixturevalue("ray_session")
    assert main([*search_argv(teacher_path, tmp_path, backend, "--set", "episodes=6"), "--json"]) == 0
    results = last_json(capsys)
    assert (results["backend"], results["workers"], results["episodes"]) == (backend, 2, 6)
    assert results["flops_ratio"] <= 0.5 + 1e-6 and results["episodes_per_minute"] > 0
    run_dir = tmp_path / results["run_dir"].split("/")[-1]
    for artifact in ARTIFACTS:
        assert (run_dir / artifact).exists(), artifact
    rewards = json.loads((run_dir / "search_state.json").read_text())["recorder"]["rewards"]
    assert len(rewards) == 6
    policy = CompressionPolicy.load(run_dir / "policy.json")
    assert policy.metadata["episode_reward"] == max(rewards) == results["best_reward"]


@pytest.mark.parametrize("backend", ["local", "ray"])
def test_two_workers_resume_after_a_hard_kill(
    backend, teacher_path, tmp_path, capsys, request, search_killed_at_sixth_episode
):
    argv = search_argv(teacher_path, tmp_path, backend, "--set", "episodes=8", "--set", "checkpoint_every=2")
    killed = search_killed_at_sixth_episode(argv)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    run_dir = next(tmp_path.iterdir())
    state = json.loads((run_dir / "search_state.json").read_text())
    assert state["recorder"]["episodes"] == 4 and state["workers"] == 2  # episodes 5-6 came after the checkpoint
    if backend == "ray":
        request.getfixturevalue("ray_session")
    assert main(["search", "--resume", str(run_dir), "--json"]) == 0
    results = last_json(capsys)
    assert results["episodes"] == 8 and results["workers"] == 2


def test_resume_with_another_worker_count_is_refused(teacher_path, tmp_path, capsys):
    assert main(search_argv(teacher_path, tmp_path, "local", "--set", "episodes=2")) == 0
    run_dir = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["search", "--resume", str(run_dir), "--set", "workers=3"]) == 2
    err = capsys.readouterr().err
    assert "workers=2" in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def spec(teacher_path):
    settings = EvaluationSettings(eval_samples=32, recalibrate_batches=2, finetune_steps=3, precision="fp32")
    return WorkerSpec(load_checkpoint(teacher_path), load_synthetic(), settings, "cpu", 1)


def test_the_rewards_kd_batches_kept_or_drawn_per_candidate_give_one_reward(spec, monkeypatch):
    import amc.evaluate.evaluator

    teacher = create_model("resnet8", num_classes=4)
    teacher.load_state_dict(spec.teacher_blob["state_dict"])
    policy = CompressionPolicy(keep_ratios={"conv1": 0.5, "layer2.0.conv1": 0.5})
    kept = CandidateEvaluator(teacher, spec.data, spec.settings)
    assert spec.settings.cache_bytes(spec.data.input_shape, 4)["kd_batches"] > 0
    first = kept.evaluate(policy)
    monkeypatch.setattr(
        amc.evaluate.evaluator, "KD_CACHE_LIMIT_BYTES", 0
    )  # a model whose batches are too large to keep
    assert spec.settings.cache_bytes(spec.data.input_shape, 4)["kd_batches"] == 0
    drawn = CandidateEvaluator(teacher, spec.data, spec.settings)
    assert drawn.evaluate(policy).accuracy == first.accuracy == kept.evaluate(policy).accuracy


def test_one_policy_gets_one_reward_from_any_backend_and_worker(spec, ray_session):
    teacher = create_model("resnet8", num_classes=4)
    teacher.load_state_dict(spec.teacher_blob["state_dict"])
    policy = CompressionPolicy(keep_ratios={"conv1": 0.5, "layer1.0.conv1": 0.3, "layer2.0.conv1": 0.7})
    expected = CandidateEvaluator(teacher, spec.data, spec.settings).evaluate(policy)
    local = LocalWorkers(spec, 2)
    try:
        from_local = local.evaluate_many([policy] * 6)
    finally:
        local.close()
    remote = RayWorkers(spec, 2)
    try:
        from_each_actor = ray_session.get([actor.evaluate.remote(policy) for actor in remote.actors])
    finally:
        remote.close()
    for result in [*from_local, *from_each_actor]:
        assert (result.accuracy, result.flops, result.params) == (expected.accuracy, expected.flops, expected.params)


def test_a_dead_local_worker_stops_the_evaluation_instead_of_hanging(spec):
    workers = LocalWorkers(spec, 2)
    try:
        assert len(set(workers.pids())) == 2  # both started before any evaluation
        os.kill(workers.pids()[0], signal.SIGKILL)
        with pytest.raises(WorkerLost, match="resume"):
            workers.evaluate_many([CompressionPolicy(keep_ratios={"conv1": 0.5})] * 4)
    finally:
        workers.close()


def test_a_ray_cluster_too_small_for_the_workers_is_refused_at_once(spec, ray_session):
    started = time.perf_counter()
    with pytest.raises(AmcError, match="the Ray cluster has 2 CPUs, and workers=3 of 1 thread"):
        RayWorkers(spec, 3)
    assert time.perf_counter() - started < 30  # not Ray's wait for CPUs that never come


def test_ray_reruns_the_evaluation_of_a_dead_actor(spec, ray_session):
    workers = RayWorkers(spec, 2)
    try:
        ray_session.kill(workers.actors[0], no_restart=False)
        results = workers.evaluate_many([CompressionPolicy(keep_ratios={"conv1": 0.5})] * 4)
        assert len({r.accuracy for r in results}) == 1
    finally:
        workers.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["workers=0"], "workers=0 is out of range"),
        (["workers=2", "backend=ray", f"ray_address=127.0.0.1:{free_port()}"], "no Ray cluster answers"),
        (["workers=2", "backend=threads"], "unknown backend"),
        (["workers=1.5"], "not a valid int"),
    ],
)
def test_bad_parallel_settings_get_one_line_and_write_nothing(overrides, message, teacher_path, tmp_path, capsys):
    out = tmp_path / "runs"
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={out}"]
    assert main([*argv, *(a for o in overrides for a in ("--set", o))]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_ray_missing_says_how_to_install_it(teacher_path, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    out = tmp_path / "runs"
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={out}", "--set", "backend=ray"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'amc[ray]'" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_more_workers_than_cores_warns_and_shares_them(capsys):
    assert worker_threads("local", available_cores() + 1, None) == 1
    assert "warning" in capsys.readouterr().err
    assert worker_threads("local", 1, None) == available_cores()


def test_parallel_envs_share_one_noise_schedule_with_distinct_draws():
    noise = TruncatedNormalDecayNoise(sigma=0.5, decay=0.9, warmup_episodes=0, seed=0)
    vectorized = shared_schedule(noise, 2)
    draws = vectorized()
    assert draws.shape == (2, 1) and draws[0, 0] != draws[1, 0]
    vectorized.reset(indices=[0])
    vectorized.reset(indices=[1])
    assert noise.episodes == 2 and noise.sigma == pytest.approx(0.5 * 0.9**2)


def test_each_env_is_credited_its_own_final_reward():
    from gymnasium import spaces

    from agents.buffers import EpisodeRewardReplayBuffer

    buffer = EpisodeRewardReplayBuffer(20, spaces.Box(0, 1, (11,)), spaces.Box(-1, 1, (1,)), device="cpu", n_envs=2,
                                       baseline_decay=0.5)  # fmt: skip
    obs, action = np.zeros((2, 11), np.float32), np.zeros((2, 1), np.float32)
    for t in range(3):
        done = t == 2
        reward = np.array([0.6, 0.8]) if done else np.zeros(2)
        buffer.add(obs, obs, action, reward, np.array([done, done]), [{}, {}])
    assert np.allclose(buffer.rewards[:3, 0], 0.0)  # env 0 ends first in env order and sets the baseline
    assert np.allclose(buffer.rewards[:3, 1], 0.2)
    assert buffer.baseline == pytest.approx(0.7)


def test_envs_of_one_round_share_the_cache_and_report_it_honestly():
    from stable_baselines3.common.monitor import Monitor

    from agents.search import play_round
    from agents.vec_env import BatchedEvaluationVecEnv
    from amc.cost.predicted import CostModel
    from amc.evaluate.evaluator import CachedEvaluator
    from envs.compression import CompressionEnv

    teacher, data = create_model("resnet8", num_classes=4), load_synthetic()
    settings = EvaluationSettings(eval_samples=32, recalibrate_batches=2, precision="fp32")
    evaluator = CachedEvaluator(CandidateEvaluator(teacher, data, settings), CostModel(teacher, (3, 16, 16)).pieces)
    vec_env = BatchedEvaluationVecEnv(
        [lambda: Monitor(CompressionEnv(teacher, data, {"flops": 0.5}, evaluator=evaluator)) for _ in range(2)],
        evaluator,
    )
    steps = len(vec_env.envs[0].unwrapped.steps)
    same = play_round(vec_env, np.zeros((2, steps)))
    assert evaluator.evaluations == 1 and [info["cached"] for info in same] == [False, True]
    other = play_round(vec_env, np.stack([np.zeros(steps), np.full(steps, 0.5)]))
    assert evaluator.evaluations == 2 and [info["cached"] for info in other] == [True, False]
    assert same[0]["reward"] == other[0]["reward"]
