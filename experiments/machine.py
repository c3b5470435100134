"""The machine a figure was measured on: CPU model, cores, torch version and GPU, recorded beside every row."""

from __future__ import annotations

import torch

from agents.workers import available_cores
from amc.deploy.runtimes import describe_cpu


def describe() -> dict:
    info = {**describe_cpu(), "cores": available_cores(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
