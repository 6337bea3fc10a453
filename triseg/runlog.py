"""TensorBoard writers and device/thread selection shared by every long-running command."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from triseg.errors import TrisegError
from triseg.options import max_threads


class LazyWriter:
    """A TensorBoard SummaryWriter made at the first value logged, so that a run failing before its
    first value leaves no event file and no folder. ``on_open(writer)`` runs once when it is made;
    :meth:`discard` takes back what it wrote (a run that fails before its first checkpoint)."""

    def __init__(self, log_dir: str | os.PathLike, on_open: Callable[[Any], None] | None = None) -> None:
        self.log_dir = Path(log_dir)
        self.on_open = on_open
        self._writer: Any = None
        self._before: set[Path] = set()
        self._made: list[Path] = []

    @property
    def writer(self) -> Any:
        """The SummaryWriter (made now if it does not exist yet)."""
        if self._writer is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from torch.utils.tensorboard import SummaryWriter
            missing = self.log_dir
            while not missing.exists() and missing != missing.parent:
                self._made.append(missing)
                missing = missing.parent
            self._before = set(self.log_dir.iterdir()) if self.log_dir.is_dir() else set()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(str(self.log_dir))
            if self.on_open is not None:
                self.on_open(self._writer)
        return self._writer

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()

    def discard(self) -> None:
        """Close, and remove the event files and folders this writer made."""
        if self._writer is None:
            return
        self._writer.close()
        for p in set(self.log_dir.iterdir()) - self._before:
            if p.is_file():
                p.unlink()
        for folder in self._made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        self._writer = None


def tensorboard_writer(log_dir: str | os.PathLike, on_open: Callable[[Any], None] | None = None) -> LazyWriter:
    """A TensorBoard writer under ``log_dir``, made (with its folder) at the first value logged."""
    return LazyWriter(log_dir, on_open)


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
        if not 1 <= workers <= max_threads():
            raise TrisegError(f"--workers must be from 1 to {max_threads()} (4 per core), got {workers}")
        torch.set_num_threads(workers)
