"""One line that says which machine a benchmark ran on: speed differs a lot between CPUs (ISA, cores)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux, else what platform reports)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def describe() -> str:
    """CPU model, the vector ISA torch dispatches to, logical CPUs and the torch version."""
    return (f"{cpu_model()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
            f"{os.cpu_count()} logical CPUs, torch {torch.__version__}")
