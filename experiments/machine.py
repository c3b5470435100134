"""The machine a figure was measured on: CPU model, cores, torch version and GPU, recorded beside every row."""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from agents.workers import available_cores


def describe() -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    info = {"cpu": cpu, "cores": available_cores(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
