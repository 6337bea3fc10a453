"""TensorBoard writers and device/thread selection shared by every long-running command."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from triseg.errors import TrisegError


def tensorboard_writer(log_dir: str | os.PathLike):
    """A SummaryWriter under ``log_dir`` (created on demand)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.utils.tensorboard import SummaryWriter
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return SummaryWriter(str(log_dir))


def resolve_device(device: str) -> str:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrisegError("--device cuda requested but no CUDA device is available")
    if device not in ("cpu", "cuda"):
        raise TrisegError(f"unknown device {device!r}; choose auto, cpu or cuda")
    return device


def set_threads(workers: int | None) -> None:
    """Use ``workers`` CPU threads for tensor math (default: PyTorch's choice)."""
    if workers is not None:
        if workers < 1:
            raise TrisegError(f"--workers must be at least 1, got {workers}")
        torch.set_num_threads(workers)
