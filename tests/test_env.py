"""The gymnasium environment: API contract, budgets, determinism, rewards."""

import warnings

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gymnasium_check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs  # noqa: F401  (registers amc/Compression-v1)
from amc.data import load_synthetic
from amc.errors import AmcError
from amc.evaluate.evaluator import Evaluation, EvaluationSettings
from amc.evaluate.rewards import REWARDS, Outcome, get_reward
from amc.models import create_model
from envs.compression import MODES, CompressionEnv

DATA = load_synthetic()
TEACHER = create_model("resnet8", num_classes=4).eval()
BUDGETS = {
    "channel": {"flops": 0.5},
    "fine-grained": {"size": 0.4},
    "removal": {"flops": 0.8},
    "removal+channel": {"flops": 0.4},
    "quantize": {"size": 0.2},
    "channel+quantize": {"flops": 0.6, "size": 0.1},
}


def make_env(mode="channel", **kwargs):
    if "budget" not in kwargs:
        kwargs["budget"] = BUDGETS[mode]
    env = gymnasium.make(
        "amc/Compression-v1", teacher=TEACHER, data=DATA, mode=mode,
        evaluation=EvaluationSettings(eval_samples=32, recalibrate_batches=2, precision="fp32"), **kwargs,
    )  # fmt: skip
    return env.unwrapped


def rollout(env, actions, seed=None):
    obs, _ = env.reset(seed=seed)
    observations, rewards = [obs], []
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(np.asarray([a], dtype=np.float32))
        assert env.observation_space.contains(obs)
        observations.append(obs)
        rewards.append(reward)
        if terminated:
            return observations, rewards, info
    raise AssertionError("episode did not end")


def test_registered_id_makes_the_env():
    env = gymnasium.make("amc/Compression-v1", teacher=TEACHER, data=DATA, budget={"flops": 0.5})
    assert isinstance(env.unwrapped, CompressionEnv)


@pytest.mark.parametrize("mode", MODES)
def test_both_env_checkers_pass_without_warnings(mode):
    env = make_env(mode)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gymnasium_check_env(env)
        sb3_check_env(env)


@pytest.mark.parametrize("mode", MODES)
def test_every_finished_episode_meets_the_budget(mode):
    env = make_env(mode)
    rng = np.random.default_rng(0)
    for _ in range(8):
        *_, info = rollout(env, rng.uniform(-1, 1, len(env.steps)))
        for resource, limit in BUDGETS[mode].items():
            assert info[f"{resource}_ratio"] <= limit + 1e-6


class ConstantAccuracy:
    """An evaluator backend that builds nothing."""

    teacher_accuracy = 0.5

    def evaluate_many(self, policies):
        return [Evaluation(0.5, 0, 0, 0, 0.0) for _ in policies]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=7, max_size=7), st.sampled_from([0.3, 0.5, 0.7]))
def test_action_wall_holds_for_any_action_sequence(actions, budget):
    env = make_env("removal+channel", budget={"flops": budget})
    env.evaluator.backend = ConstantAccuracy()  # the wall is what is tested here, not the accuracy
    *_, info = rollout(env, actions)
    assert info["flops_ratio"] <= budget + 1e-6


def test_flops_budget_is_used_not_wasted():
    env = make_env("channel")
    *_, info = rollout(env, [1.0] * len(env.steps))  # the agent asks to keep everything
    assert 0.45 <= info["flops_ratio"] <= 0.5


def test_an_episode_is_a_deterministic_function_of_its_actions_whatever_the_seed():
    actions = np.random.default_rng(3).uniform(-1, 1, 6)
    a_obs, a_rew, a_info = rollout(make_env(), actions, seed=7)
    b_obs, b_rew, b_info = rollout(make_env(), actions, seed=123)
    assert all(np.array_equal(x, y) for x, y in zip(a_obs, b_obs, strict=True))
    assert a_rew == b_rew and a_info["policy"] == b_info["policy"] and a_info["accuracy"] == b_info["accuracy"]
    other = rollout(make_env(), -actions, seed=7)
    assert other[2]["policy"] != a_info["policy"]  # the actions, not the seed, make the episode


def test_identical_policies_are_evaluated_once():
    env = make_env()
    calls = []
    real = env.evaluator.backend.evaluate_many
    env.evaluator.backend.evaluate_many = lambda policies: calls.append(len(policies)) or real(policies)
    actions = [0.3] * len(env.steps)
    *_, first = rollout(env, actions)
    *_, second = rollout(env, actions)
    assert calls == [1] and not first["cached"] and second["cached"]
    assert first["accuracy"] == second["accuracy"]


def test_reward_comes_only_at_the_end_and_info_carries_the_policy():
    env = make_env("channel+quantize")
    _, rewards, info = rollout(env, [0.0] * len(env.steps))
    assert all(r == 0 for r in rewards[:-1]) and rewards[-1] == info["reward"]
    assert set(info) >= {"accuracy", "flops_ratio", "params_ratio", "size_ratio", "policy"}
    assert set(info["policy"]["bits"]) and set(info["policy"]["keep_ratios"])


def test_observation_walks_forward_and_tracks_reduction():
    env = make_env()
    observations, _, _ = rollout(env, [-1.0] * len(env.steps))
    index = [o[0] for o in observations[:-1]]
    reduced = [o[7] for o in observations[:-1]]
    assert index == sorted(index) and index[0] == 0 and index[-1] == 1
    assert reduced[0] == 0 and reduced[-1] > 0


def test_impossible_budget_and_unknown_mode_are_refused():
    with pytest.raises(AmcError, match="impossible"):
        make_env(budget={"flops": 0.01})
    with pytest.raises(AmcError, match="unknown mode"):
        make_env("prune-everything", budget={"flops": 0.5})
    with pytest.raises(AmcError, match="latency table"):
        make_env(budget={"latency": 0.5})


def test_reward_registry():
    outcome = Outcome(accuracy=0.8, teacher_accuracy=0.9, ratios={"params": 0.5, "flops": 0.5}, flops=1e6)
    assert set(REWARDS) >= {"acc", "err_log_flops", "n2n", "haq"}
    assert get_reward("acc")(outcome) == 0.8
    assert get_reward("err_log_flops")(outcome) == pytest.approx(-0.2 * np.log(1e6))
    assert get_reward("n2n")(outcome) == pytest.approx(0.8 / 0.9 * 0.5 * 1.5)
    assert get_reward("haq")(outcome) == pytest.approx(-0.1)
    with pytest.raises(AmcError, match="unknown reward"):
        get_reward("eval('1')")


def test_latency_budget_is_met_through_the_latency_table():
    from amc.cost.latency import build_latency_table

    table = build_latency_table(TEACHER, (3, 16, 16), grid_points=3, repeats=1)
    for entry in table.layers.values():  # deterministic costs: the test checks the budget, not the timer
        entry.ms = [[1e-4 + 1e-6 * cin * cout for cout in entry.out_grid] for cin in entry.in_grid]
    loose = make_env(budget={"latency": 1.0}, latency_table=table)
    fastest = loose._ratios(loose._most_aggressive_policy())["latency"]
    assert fastest < 1.0
    limit = (fastest + 1.0) / 2  # halfway between the fastest student and the teacher
    env = make_env(budget={"latency": limit}, latency_table=table)
    rng = np.random.default_rng(0)
    for _ in range(4):
        *_, info = rollout(env, rng.uniform(-1, 1, len(env.steps)))
        assert info["latency_ratio"] <= limit + 1e-6
