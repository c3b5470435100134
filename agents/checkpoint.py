"""Agent and replay-buffer files that load without unpickling anything.

SB3's own `save`/`load` and `save_replay_buffer` pickle whole Python objects (cloudpickle), so a crafted
file could run code when loaded. amc stores instead:
- `agent.pt`: the networks' and optimizers' state dicts, SAC's entropy coefficient and the step counters,
  read back with `torch.load(weights_only=True)`;
- `replay_buffer.npz`: the buffer's arrays, read back with `numpy.load(allow_pickle=False)`.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.utils import get_device

from amc.errors import AmcError, library_text

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
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError) as exc:
        reason = library_text(exc)
        raise AmcError(f"agent {path} is corrupt or not an amc agent ({reason}); pass an agent.pt") from exc
    if not isinstance(payload, dict) or payload.get("format") != AGENT_FORMAT:
        raise AmcError(f"{path} is not an amc agent ({AGENT_FORMAT}); pass the agent.pt of an `amc search` run")
    return payload


def restore_agent(agent, payload: dict) -> None:
    """Put a saved agent's weights, optimizer states and counters into a freshly made agent."""
    try:
        agent.set_parameters(payload["parameters"], exact_match=True, device=get_device(agent.device))
        for name, value in payload["tensors"].items():
            getattr(agent, name).data.copy_(value)
    except (RuntimeError, ValueError, KeyError, AttributeError) as exc:
        raise AmcError(f"the saved agent does not fit this search's networks ({type(exc).__name__}); resume with "
                       "the settings it was saved with") from exc  # fmt: skip
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
            return {name: saved[name] for name in (*BUFFER_ARRAYS, "pos", "full", "baseline")}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
        reason = library_text(exc)
        raise AmcError(f"replay buffer {path} is corrupt or not an amc buffer ({reason}); start a new search") from exc


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
