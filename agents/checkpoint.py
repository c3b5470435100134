"""Agent and replay-buffer files that load without unpickling anything.

SB3's own `save`/`load` and `save_replay_buffer` pickle whole Python objects (cloudpickle), so a crafted
file could run code when loaded. amc stores instead:
- `agent.pt`: the networks' and optimizers' state dicts, SAC's entropy coefficient and the step counters,
  read back with `torch.load(weights_only=True)`;
- `replay_buffer.npz`: the buffer's arrays, read back with `numpy.load(allow_pickle=False)`.
"""

from __future__ import annotations

import math
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.utils import get_device

from amc.errors import AmcError, library_text
from amc.values import finite, whole

AGENT_FORMAT = "amc-agent/1"
BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def save_agent(agent, path: str | Path, algorithm: str) -> None:
    """Weights, optimizer states and counters of an SB3 agent, replaced atomically."""
    _, tensors = agent._get_torch_save_params()
    payload = {
        "format": AGENT_FORMAT,
        "algorithm": algorithm,
        "observation_shape": list(agent.observation_space.shape),
        "parameters": agent.get_parameters(),
        "tensors": {name: getattr(agent, name).detach().cpu() for name in tensors},
        "counters": {
            "num_timesteps": agent.num_timesteps,
            "episode_num": agent._episode_num,
            "n_updates": agent._n_updates,
        },  # fmt: skip
    }
    _atomic(Path(path), lambda tmp: torch.save(payload, tmp))


def load_agent(path: str | Path) -> dict:
    """An `agent.pt` payload; anything else (an SB3 zip, a pickle, a truncated file) is a one-line error."""
    path = Path(path)
    if not path.is_file():
        raise AmcError(f"agent {path} does not exist; pass the agent.pt of an `amc search` run")
    if path.suffix == ".zip":
        raise AmcError(f"{path} is an SB3 agent.zip, which unpickles code on load and which amc no longer reads; "
                       "use the agent.pt of a search made with this amc")  # fmt: skip
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (the unpickler fails in many ways on damaged bytes)
        reason = library_text(exc)
        raise AmcError(f"agent {path} is corrupt or not an amc agent ({reason}); pass an agent.pt") from exc
    if not isinstance(payload, dict) or payload.get("format") != AGENT_FORMAT:
        raise AmcError(f"{path} is not an amc agent ({AGENT_FORMAT}); pass the agent.pt of an `amc search` run")
    problem = _agent_problem(payload)
    if problem:
        raise AmcError(f"agent {path} is damaged ({problem}); pass the agent.pt of an `amc search` run")
    return payload


def _agent_problem(payload: dict) -> str | None:
    """What is not as `save_agent` writes it (None when nothing): every field's kind."""

    def state_dict(value) -> bool:
        return (
            isinstance(value, dict)
            and all(isinstance(k, str) for k in value)
            and all(isinstance(v, (torch.Tensor, dict, list, int, float)) for v in value.values())
        )

    shape = payload.get("observation_shape")
    counters = payload.get("counters")
    checks = {
        "algorithm": isinstance(payload.get("algorithm"), str),
        "observation_shape": isinstance(shape, list) and len(shape) == 1 and _count(shape[0], 1),
        "parameters": isinstance(payload.get("parameters"), dict)
        and all(isinstance(k, str) and state_dict(v) for k, v in payload["parameters"].items()),
        "tensors": isinstance(payload.get("tensors"), dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in payload["tensors"].items()),
        "counters": isinstance(counters, dict)
        and all(_count(counters.get(k)) for k in ("num_timesteps", "episode_num", "n_updates")),
    }  # fmt: skip
    bad = [key for key, ok in checks.items() if not ok]
    return f"{', '.join(bad)} not as saved" if bad else None


def restore_agent(agent, payload: dict) -> None:
    """Put a saved agent's weights, optimizer states and counters into a freshly made agent."""
    try:
        agent.set_parameters(payload["parameters"], exact_match=True, device=get_device(agent.device))
        for name, value in payload["tensors"].items():
            getattr(agent, name).data.copy_(value)
    except (RuntimeError, ValueError, KeyError, AttributeError, TypeError, IndexError) as exc:
        raise AmcError(f"the saved agent does not fit this search's networks or is damaged ({type(exc).__name__}); "
                       "resume with the settings it was saved with") from exc  # fmt: skip
    counters = payload["counters"]
    agent.num_timesteps, agent._episode_num = counters["num_timesteps"], counters["episode_num"]
    agent._n_updates = counters["n_updates"]


def save_replay_buffer(buffer, path: str | Path) -> None:
    """The buffer's arrays, its position and the episode-credit state, replaced atomically."""
    arrays = {name: getattr(buffer, name) for name in BUFFER_ARRAYS}
    baseline = np.nan if buffer.baseline is None else buffer.baseline
    extra = {"pos": np.asarray(buffer.pos), "full": np.asarray(buffer.full), "baseline": np.asarray(baseline)}
    _atomic(Path(path), lambda tmp: np.savez(tmp, **arrays, **extra))


def read_replay_buffer(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays `save_replay_buffer` wrote; an object array (a pickle) or a damaged file is a one-line error."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {name: saved[name] for name in (*BUFFER_ARRAYS, "pos", "full", "baseline")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        reason = library_text(exc)
        raise AmcError(f"replay buffer {path} is corrupt or not an amc buffer ({reason}); start a new search") from exc
    problem = _buffer_problem(arrays)
    if problem:
        raise AmcError(f"replay buffer {path} is damaged ({problem}); start a new search")
    return arrays


def _buffer_problem(arrays: dict[str, np.ndarray]) -> str | None:
    """What is inconsistent in a saved buffer's arrays (None when nothing): one length, numbers, shapes."""
    rows = {name: arrays[name].shape[0] if arrays[name].ndim else -1 for name in BUFFER_ARRAYS}
    if len(set(rows.values())) != 1 or min(rows.values()) < 1:
        return f"its arrays have lengths {sorted(set(rows.values()))}"
    for name in (*BUFFER_ARRAYS, "pos", "full", "baseline"):
        if arrays[name].dtype.kind not in "biuf":
            return f"{name} holds {arrays[name].dtype}, not numbers"
    if arrays["observations"].shape != arrays["next_observations"].shape or arrays["observations"].ndim != 3:
        return "observations and next observations differ in shape"
    if arrays["actions"].ndim != 3 or any(arrays[n].shape != arrays["actions"].shape[:2] for n in BUFFER_ARRAYS[3:]):
        return "actions, rewards and episode ends differ in shape"
    if any(arrays[n].size != 1 for n in ("pos", "full", "baseline")) or not 0 <= int(arrays["pos"]) <= rows["actions"]:
        return "its position is out of range"
    return None


def check_buffer_fits(saved: dict[str, np.ndarray], size: int, envs: int, observation: int) -> None:
    """Refuse, before a resumed search writes anything, a saved buffer that this search's cannot take."""
    have, want = saved["observations"].shape, (envs, observation)
    if have[1:] != want or saved["actions"].shape[1:] != (envs, 1) or have[0] > size:
        raise AmcError(f"the saved replay buffer holds {have[0]} steps of {have[1:]} observations; this search's holds "
                       f"{size} of {want}; resume with the settings it was saved with")  # fmt: skip


def fill_replay_buffer(buffer, saved: dict[str, np.ndarray]) -> None:
    """Put `read_replay_buffer`'s arrays into a buffer of the same shape, or, oldest first, into a longer one
    (a resumed search that was given more episodes); partial episodes are forgotten."""
    pos, full = int(saved["pos"]), bool(saved["full"])
    for name in BUFFER_ARRAYS:
        array, target = saved[name], getattr(buffer, name)
        if array.shape == target.shape:
            target[...] = array
        elif array.shape[1:] == target.shape[1:] and array.shape[0] < target.shape[0]:
            target[: len(array)] = np.roll(array, -pos, axis=0) if full else array
        else:
            raise AmcError(f"the saved replay buffer's {name} has shape {array.shape}, this search's {target.shape}; "
                           "resume with the settings it was saved with")  # fmt: skip
    saved_size = len(saved[BUFFER_ARRAYS[0]])
    if saved_size == buffer.buffer_size:
        buffer.pos, buffer.full = pos, full
    else:  # copied oldest first into the front of a longer buffer
        buffer.pos, buffer.full = (saved_size if full else pos), False
    baseline = float(saved["baseline"])
    buffer.baseline = None if np.isnan(baseline) else baseline
    buffer.start_new_episode()


def _count(value, least: int = 0) -> bool:
    """A saved counter: a whole number that fits the int the libraries keep it in."""
    return whole(value, least, 2**31 - 1)


def _rng_state_ok(state) -> bool:
    try:
        np.random.default_rng().bit_generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError):
        return False
    return True


def _best_info_ok(info) -> bool:
    """The best episode's record: a policy that reads as one, and its per-step values as numbers."""
    from amc.compress.policy import CompressionPolicy

    if not isinstance(info, dict) or not isinstance(info.get("policy"), dict) or not finite(info.get("accuracy")):
        return False
    if not isinstance(info.get("values"), list) or not all(finite(v) for v in info["values"]):
        return False
    try:
        CompressionPolicy.from_dict(info["policy"])
    except (AmcError, TypeError, ValueError, KeyError, AttributeError):
        return False
    return True


def state_problem(state: dict) -> str | None:
    """What is wrong in a run's search_state.json (None when nothing), checked before a resume writes anything."""
    recorder = state.get("recorder", {})
    if not isinstance(recorder, dict):
        return "recorder is not a mapping"
    checks = {
        "recorder.episodes": _count(recorder.get("episodes", 0)),
        "recorder.rewards": isinstance(recorder.get("rewards", []), list)
        and all(finite(r) for r in recorder.get("rewards", [])),
        "recorder.best_reward": recorder.get("best_reward") in (None, -math.inf) or finite(recorder.get("best_reward")),
        "recorder.best_episode": recorder.get("best_episode") is None or _count(recorder.get("best_episode")),
        "recorder.best_info": recorder.get("best_info") is None or _best_info_ok(recorder["best_info"]),
        "workers": _count(state.get("workers", 1), 1),
        "evaluations": _count(state.get("evaluations", 0)),
        "seconds": all(finite(state.get(k, 0.0), 0.0) for k in ("seconds", "env_seconds", "evaluation_seconds")),
        "trials": isinstance(state.get("trials", []), list),
        "rng": state.get("rng") is None or _rng_state_ok(state["rng"]),
        "noise": state.get("noise") is None
        or (isinstance(state["noise"], dict) and finite(state["noise"].get("sigma"), 0.0)
            and _count(state["noise"].get("episodes")) and _rng_state_ok(state["noise"].get("rng"))),
    }  # fmt: skip
    bad = [key for key, ok in checks.items() if not ok]
    return f"{', '.join(bad)} not as saved" if bad else None
