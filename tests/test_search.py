"""The agent layer: AMC's DDPG configuration, credit assignment, noise, and `amc search` end to end."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HANG_GUARD_SECONDS
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import agents.callbacks
from agents.buffers import EpisodeRewardReplayBuffer
from agents.callbacks import TAGS
from agents.checkpoint import load_agent, restore_agent, save_agent
from agents.cli import main
from agents.cli_config import dump_config
from agents.config import AgentConfig, SearchConfig, load_config
from agents.ddpg import AmcDDPG, make_agent
from agents.noise import TruncatedNormalDecayNoise
from agents.search import SEARCHERS
from amc.cost.budget import Budget
from amc.data import load_synthetic
from amc.errors import AmcError
from amc.evaluate.evaluator import EvaluationSettings
from amc.models import create_model
from envs.compression import MODES, CompressionEnv

SEARCH = ["--set", "episodes=4", "--set", "warmup_episodes=2", "--set", "eval_samples=32",
          "--set", "recalibrate_batches=2", "--set", "precision=fp32", "--set", "batch_size=8"]  # fmt: skip


def small_env():
    settings = EvaluationSettings(eval_samples=32, recalibrate_batches=2, precision="fp32")
    return CompressionEnv(create_model("resnet8", num_classes=4), load_synthetic(), {"flops": 0.5}, evaluation=settings)


def test_ddpg_is_configured_like_amc():
    env = small_env()
    agent = make_agent(env, len(env.steps), SearchConfig(agent=AgentConfig(warmup_episodes=3)))
    assert isinstance(agent, AmcDDPG)
    assert agent.tau == 0.01 and agent.gamma == 1.0 and agent.batch_size == 64
    assert agent.learning_starts == 3 * len(env.steps)
    assert [m.out_features for m in agent.actor.mu if isinstance(m, torch.nn.Linear)] == [300, 300, 1]
    assert [m.out_features for m in agent.critic.qf0 if isinstance(m, torch.nn.Linear)] == [300, 300, 1]
    assert isinstance(agent.replay_buffer, EpisodeRewardReplayBuffer)
    agent.learning_starts = 0
    agent.learn(total_timesteps=2 * len(env.steps))
    assert agent.actor.optimizer.param_groups[0]["lr"] == 1e-4
    assert agent.critic.optimizer.param_groups[0]["lr"] == 1e-3


def test_final_reward_is_credited_to_every_step_minus_a_moving_baseline():
    env = small_env()
    buffer = EpisodeRewardReplayBuffer(20, env.observation_space, env.action_space, device="cpu", baseline_decay=0.5)
    obs, action = np.zeros((1, 11), np.float32), np.zeros((1, 1), np.float32)

    def episode(final):
        for t in range(3):
            done = t == 2
            buffer.add(obs, obs, action, np.array([final if done else 0.0]), np.array([done]), [{}])

    episode(0.6)  # the first episode sets the baseline
    episode(0.8)
    assert np.allclose(buffer.rewards[:3, 0], 0.0)
    assert np.allclose(buffer.rewards[3:6, 0], 0.2)  # 0.8 - 0.6
    assert buffer.baseline == pytest.approx(0.7)


def test_amcs_sample_time_baseline_stores_raw_rewards_and_centres_each_batch():
    env = small_env()
    buffer = EpisodeRewardReplayBuffer(20, env.observation_space, env.action_space, device="cpu", baseline_decay=0.5,
                                       credit_baseline="sample")  # fmt: skip
    obs, action = np.zeros((1, 11), np.float32), np.zeros((1, 1), np.float32)
    for final in (0.6, 0.8):
        for t in range(3):
            buffer.add(obs, obs, action, np.array([final if t == 2 else 0.0]), np.array([t == 2]), [{}])
    assert np.allclose(buffer.rewards[:6, 0], [0.6] * 3 + [0.8] * 3)  # stored as they came
    first = buffer.sample(6).rewards.numpy().ravel()
    assert first.mean() == pytest.approx(0.0, abs=1e-6)  # the first batch's mean is the first baseline
    baseline = buffer.baseline
    later = buffer._normalize_reward(np.array([[1.0], [1.0]], np.float32))
    assert buffer.baseline == pytest.approx(baseline + 0.5 * (1.0 - baseline))  # moving average of batch means
    assert np.allclose(later, 1.0 - buffer.baseline)
    with pytest.raises(ValueError):
        EpisodeRewardReplayBuffer(20, env.observation_space, env.action_space, credit_baseline="batch")


def test_normalized_rewards_are_scaled_by_the_spread_of_stored_rewards():
    env = small_env()
    buffers = [EpisodeRewardReplayBuffer(40, env.observation_space, env.action_space, device="cpu",
                                         normalize_reward=normalize) for normalize in (False, True)]  # fmt: skip
    obs, action = np.zeros((1, 11), np.float32), np.zeros((1, 1), np.float32)
    for buffer in buffers:
        for final in (0.60, 0.62, 0.58, 0.66, 0.61):
            for t in range(3):
                buffer.add(obs, obs, action, np.array([final if t == 2 else 0.0]), np.array([t == 2]), [{}])
    raw, scaled = buffers[0].rewards[:15, 0], buffers[1].rewards[:15, 0]
    assert np.allclose(raw, scaled)  # stored the same; only sampled batches are scaled
    batch = buffers[1]._normalize_reward(raw[:, None].copy())
    assert np.allclose(batch[:, 0], raw / raw.std(), atol=1e-5)
    assert batch.std() == pytest.approx(1.0, abs=1e-4)
    assert np.allclose(buffers[0]._normalize_reward(raw[:, None].copy())[:, 0], raw)  # off: unchanged


def test_noise_is_truncated_and_decays_after_warmup():
    noise = TruncatedNormalDecayNoise(sigma=0.5, decay=0.95, warmup_episodes=2, seed=0)
    draws = np.concatenate([noise() for _ in range(2000)])
    assert np.abs(draws).max() <= 1.0 and 0.35 < draws.std() < 0.5
    for _ in range(4):
        noise.reset()
    assert noise.sigma == pytest.approx(0.5 * 0.95**2)


def test_saved_agent_predicts_the_same(tmp_path):
    env = small_env()
    agent = make_agent(env, len(env.steps), SearchConfig(agent=AgentConfig(warmup_episodes=0, batch_size=4)))
    agent.learn(total_timesteps=3 * len(env.steps))
    save_agent(agent, tmp_path / "agent.pt", "ddpg")
    loaded = make_agent(env, len(env.steps), SearchConfig(agent=AgentConfig(warmup_episodes=0, batch_size=4, seed=1)))
    restore_agent(loaded, load_agent(tmp_path / "agent.pt"))
    assert loaded.num_timesteps == agent.num_timesteps
    observations = np.random.default_rng(0).uniform(0, 1, (10, 11)).astype(np.float32)
    assert np.allclose(agent.predict(observations, deterministic=True)[0],
                       loaded.predict(observations, deterministic=True)[0])  # fmt: skip
    assert loaded.critic_learning_rate == 1e-3


def test_search_subprocess_writes_every_artifact_and_documented_tags(teacher_path, tmp_path):
    argv = [
        sys.executable,
        "-m",
        "agents.cli",
        "search",
        "--set",
        f"teacher={teacher_path}",
        "--set",
        f"out_dir={tmp_path}",
        "--set",
        "episodes=2",
        "--set",
        "warmup_episodes=1",
        *SEARCH[4:],
        "--json",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=HANG_GUARD_SECONDS)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    run_dir = tmp_path / results["run_dir"].split("/")[-1]
    for artifact in ("config.yaml", "policy.json", "agent.pt", "replay_buffer.npz", "student.pt", "results.json", "tb"):
        assert (run_dir / artifact).exists(), artifact
    assert results["episodes"] == 2 and results["flops_ratio"] <= 0.5 + 1e-6
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0}).Reload()
    scalars = set(events.Tags()["scalars"])
    assert set(TAGS) <= scalars
    assert any(t.startswith("actions/") for t in scalars)
    assert "actions/values" in events.Tags()["histograms"]
    assert "best/policy" in events.Tags()["images"]
    assert len(events.Scalars("search/reward")) == 2


def test_random_and_uniform_run_through_the_same_runner(teacher_path, tmp_path, capsys):
    for agent in ("random", "random-actions", "uniform"):
        argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", "--set",
                f"agent={agent}", "--set", f"name={agent}", *SEARCH, "--json"]  # fmt: skip
        assert main(argv) == 0
        results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert results["episodes"] == (1 if agent == "uniform" else 4)
        assert results["flops_ratio"] <= 0.5 + 1e-6


def test_global_agent_plays_the_global_pruning_policy_once(teacher_path, tmp_path, capsys):
    policy_path = tmp_path / "global.json"
    assert main(["baseline", "global", "--teacher", str(teacher_path), "--flops", "0.5", "--importance", "lamp",
                 "--out", str(policy_path)]) == 0  # fmt: skip
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", "--set", "agent=global",
            "--set", "global_importance=lamp", *SEARCH, "--json"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    played = json.loads((Path(results["run_dir"]) / "policy.json").read_text())["keep_ratios"]
    assert results["episodes"] == 1 and played == pytest.approx(json.loads(policy_path.read_text())["keep_ratios"])
    assert main([*argv[:-1], "--set", "global_importance=hessian"]) == 2
    assert "unknown importance 'hessian'" in capsys.readouterr().err


def test_reward_finetune_is_reported_apart_from_the_recalibrated_student(teacher_path, tmp_path, capsys):
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", "--set", "agent=uniform",
            "--set", "finetune_steps=10", *SEARCH, "--json"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    recalibrated, tuned = results["student_before_finetune"], results["student_after_reward_finetune"]
    assert results["student"] == tuned
    assert recalibrated["flops"] == tuned["flops"]
    assert (recalibrated["accuracy"], recalibrated["val_accuracy"]) != (tuned["accuracy"], tuned["val_accuracy"])
    kept = results["worker_cache_bytes"]  # what each worker keeps: the KD batches are 10 batches of 128 images
    assert kept["kd_batches"] >= 10 * 128 * 3 * 16 * 16 * 4 and kept["validation"] > 0


def test_kd_batches_too_large_to_keep_are_drawn_per_candidate_and_the_search_says_so(teacher_path, tmp_path, capsys,
                                                                                     monkeypatch):  # fmt: skip
    import agents.search
    import amc.evaluate.evaluator

    for module in (amc.evaluate.evaluator, agents.search):  # a model whose batches would not fit
        monkeypatch.setattr(module, "KD_CACHE_LIMIT_BYTES", 1024)
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", "--set", "agent=uniform",
            "--set", "finetune_steps=2", *SEARCH, "--json"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "KD batches and teacher logits exceed" in out
    assert json.loads(out.strip().splitlines()[-1])["worker_cache_bytes"]["kd_batches"] == 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_a_background_search_with_its_state_saved(teacher_path, tmp_path, capsys, monkeypatch, signum):
    real = agents.callbacks.EpisodeRecorder.on_episode

    def signal_at_third(self, info, sigma=None):
        if self.episodes == 2:
            os.kill(os.getpid(), signum)
        real(self, info, sigma)

    monkeypatch.setattr(agents.callbacks.EpisodeRecorder, "on_episode", signal_at_third)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what `cmd &` gives a job in a non-interactive shell
    try:
        argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", *SEARCH]
        assert main(argv) == 130
    finally:
        signal.signal(signal.SIGINT, previous)
    capsys.readouterr()
    state = json.loads((next(tmp_path.iterdir()) / "search_state.json").read_text())
    assert 2 <= state["recorder"]["episodes"] < 4


def test_search_resumes_after_interruption(teacher_path, tmp_path, capsys, interrupt_third_episode):
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", *SEARCH]
    assert main(argv) == 130
    capsys.readouterr()
    run_dir = next(tmp_path.iterdir())
    state = json.loads((run_dir / "search_state.json").read_text())
    assert state["recorder"]["episodes"] == 2
    assert (run_dir / "policy.json").exists() and (run_dir / "replay_buffer.npz").exists()
    interrupted_policy = json.loads((run_dir / "policy.json").read_text())
    assert interrupted_policy["architecture"] == "resnet8" and interrupted_policy["fingerprint"]  # usable as is
    interrupt_third_episode()  # undo
    (run_dir / "replay_buffer.npz").rename(tmp_path / "buffer.npz")  # a buffer lost: refused, unless told
    assert main(["search", "--resume", str(run_dir)]) == 2
    assert "resume_without_buffer=true" in capsys.readouterr().err
    assert main(["search", "--resume", str(run_dir), "--set", "resume_without_buffer=true", "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["episodes"] == 4
    assert 2 < results["evaluations"] <= 5  # those scored before the interruption count too (the 3rd may be twice)
    events = EventAccumulator(str(run_dir / "tb")).Reload()
    assert [e.step for e in events.Scalars("search/reward")] == [1, 2, 3, 4]


@pytest.mark.parametrize("agent", ["ddpg", "random"])
def test_a_hard_kill_loses_only_the_episodes_since_the_last_checkpoint(
    teacher_path, tmp_path, capsys, agent, search_killed_at_sixth_episode
):
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", *SEARCH,
            "--set", "episodes=8", "--set", "checkpoint_every=2", "--set", f"agent={agent}"]  # fmt: skip
    killed = search_killed_at_sixth_episode(argv)
    assert killed.returncode == -signal.SIGKILL
    run_dir = next(tmp_path.iterdir())
    state = json.loads((run_dir / "search_state.json").read_text())
    assert state["recorder"]["episodes"] == 4  # the fifth episode came after the last checkpoint
    assert (run_dir / "agent.pt").exists() == (agent == "ddpg")
    assert not list(run_dir.glob("*.tmp*"))
    assert main(["search", "--resume", str(run_dir), "--json"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["episodes"] == 8
    policy = json.loads((run_dir / "policy.json").read_text())
    assert policy["metadata"]["episode_reward"] == results["best_reward"]  # not a best lost with the kill


@pytest.mark.parametrize("path", sorted((Path(__file__).parents[1] / "experiments/configs").glob("*.yaml")),
                         ids=lambda p: p.stem)  # fmt: skip
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert Budget.parse(cfg.env.budget).items()
    assert cfg.env.mode in MODES and cfg.agent.algorithm in SEARCHERS


def test_search_config_errors_are_one_line(tmp_path, capsys):
    assert main(["search", "--set", "no_such_key=1"]) == 2
    assert "unknown config keys" in capsys.readouterr().err
    assert main(["search", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["search", "--resume", str(tmp_path)]) == 2


def test_the_search_config_is_a_tree_that_reads_every_spelling(tmp_path):
    nested = tmp_path / "nested.yaml"
    nested.write_text("teacher: t.pt\nenv:\n  budget: flops=0.3\nagent:\n  algorithm: td3\n  noise_sigma: 0.25\n")
    flat = tmp_path / "flat.yaml"  # the spelling of earlier versions
    flat.write_text("teacher: t.pt\nbudget: flops=0.3\nagent: td3\nnoise_sigma: 0.25\n")
    assert load_config(nested) == load_config(flat)
    cfg = load_config(nested, ["agent.noise_sigma=0.1", "workers=2", "evaluation.finetune_steps=30"])
    assert (cfg.agent.noise_sigma, cfg.run.workers, cfg.evaluation.finetune_steps) == (0.1, 2, 30)
    assert cfg.agent.algorithm == "td3" and cfg.env.budget == "flops=0.3"
    dump_config(cfg, tmp_path / "saved.yaml")
    assert "agent:\n  algorithm: td3\n" in (tmp_path / "saved.yaml").read_text()
    assert load_config(tmp_path / "saved.yaml") == cfg  # a run folder's config reads back whole
    with pytest.raises(AmcError, match=r"unknown config keys \['agent.noise'\]"):
        load_config(nested, ["agent.noise=0.1"])
    with pytest.raises(AmcError, match="agent.noise_sigma='loud' is not a valid float"):
        load_config(nested, ["agent.noise_sigma=loud"])


def test_nested_keys_are_flags_and_old_flags_still_work(teacher_path, tmp_path, capsys):
    argv = [
        "search",
        "--teacher",
        str(teacher_path),
        "--run.out-dir",
        str(tmp_path / "a"),
        "--agent.episodes",
        "2",
        "--agent.warmup-episodes",
        "2",
        "--evaluation.eval-samples",
        "32",
        "--env.budget",
        "flops=0.4",
        "--warmup-episodes",
        "1",
        "--json",
    ]  # fmt: skip  (the last flag is an earlier, flat spelling)
    assert main(argv) == 0
    saved = load_config(next((tmp_path / "a").glob("search-*")) / "config.yaml")
    assert (saved.agent.episodes, saved.agent.warmup_episodes, saved.env.budget) == (2, 1, "flops=0.4")
    with pytest.raises(SystemExit):
        main(["search", "--help"])
    assert "agent.noise_sigma (float, default 0.5)" in capsys.readouterr().out


@pytest.mark.parametrize("algorithm", ["td3", "sac"])
def test_td3_and_sac_are_one_setting_away(algorithm):
    env = small_env()
    cfg = SearchConfig(agent=AgentConfig(algorithm=algorithm, warmup_episodes=1, batch_size=4))
    agent = make_agent(env, len(env.steps), cfg)
    agent.learn(total_timesteps=3 * len(env.steps))
    assert agent.critic.optimizer.param_groups[0]["lr"] == 1e-3
    assert agent.actor.optimizer.param_groups[0]["lr"] == 1e-4


def test_reward_normalization_is_one_setting_away():
    env = small_env()
    cfg = SearchConfig(agent=AgentConfig(normalize_reward=True, warmup_episodes=1, batch_size=4))
    agent = make_agent(env, len(env.steps), cfg)
    assert agent.replay_buffer.normalize_reward
    agent.learn(total_timesteps=3 * len(env.steps))
    assert agent._n_updates > 0 and np.isfinite(agent.logger.name_to_value.get("train/critic_loss", np.nan))


def test_sb3_losses_and_learning_rates_reach_tensorboard(teacher_path, tmp_path, capsys):
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", "--set", "episodes=4",
            "--set", "warmup_episodes=1", *SEARCH[4:], "--json"]  # fmt: skip
    assert main(argv) == 0
    run_dir = next(tmp_path.glob("search-*"))
    scalars = set(EventAccumulator(str(run_dir / "tb")).Reload().Tags()["scalars"])
    assert {"train/actor_loss", "train/critic_loss", "train/learning_rate", "train/critic_learning_rate"} <= scalars
    assert set(TAGS) <= scalars  # beside the search's own


def test_config_keys_work_as_flags_too(teacher_path, tmp_path, capsys):
    flags = ["search", "--teacher", str(teacher_path), "--out-dir", str(tmp_path / "a"), "--episodes", "2",
             "--warmup-episodes", "2", "--eval-samples", "32", "--budget", "flops=0.4", "--json"]  # fmt: skip
    assert main(flags) == 0
    config = (next((tmp_path / "a").glob("search-*")) / "config.yaml").read_text()
    assert "episodes: 2\n" in config and "budget: flops=0.4\n" in config and "eval_samples: 32\n" in config
    assert main([*flags[:-1], "--set", "episodes=3", "--json"]) == 0  # an explicit --set wins
    assert "episodes: 3\n" in (sorted((tmp_path / "a").glob("search-*"))[-1] / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["search", "--teacher", str(teacher_path), "--episodes", "1.5"]) == 2
    assert "episodes=1.5 is not a valid int" in capsys.readouterr().err


@pytest.mark.parametrize("failing_call", [1, 4])  # in the first episode, and after some episodes were saved
def test_a_search_that_fails_leaves_a_resumable_run_folder_that_says_so_or_none(
    teacher_path, tmp_path, capsys, monkeypatch, failing_call
):
    import amc.evaluate.evaluator

    real, calls = amc.evaluate.evaluator.CandidateEvaluator.evaluate, []

    def fails_at_a_call(self, policy):
        calls.append(policy)
        if len(calls) == failing_call:
            raise RuntimeError("expected input to have 512 channels, but got 250")  # a model amc cannot build yet
        return real(self, policy)

    monkeypatch.setattr(amc.evaluate.evaluator.CandidateEvaluator, "evaluate", fails_at_a_call)
    argv = ["search", "--set", f"teacher={teacher_path}", "--set", f"out_dir={tmp_path}", *SEARCH]
    with pytest.raises(RuntimeError, match="512 channels"):
        main(argv)
    runs = list(tmp_path.iterdir())
    err = capsys.readouterr().err
    if failing_call == 1:
        assert runs == []  # nothing to resume: no folder
    else:
        state = json.loads((runs[0] / "search_state.json").read_text())
        saved = state["recorder"]["episodes"]
        assert saved >= 1 and f"the search failed after {saved} episodes, which are saved" in err
        monkeypatch.setattr(amc.evaluate.evaluator.CandidateEvaluator, "evaluate", real)
        assert main(["search", "--resume", str(runs[0]), "--json"]) == 0
