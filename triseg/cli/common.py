"""Helpers the modes share: threads, backend choice, run folders."""

from __future__ import annotations

from pathlib import Path

from triseg import quant
from triseg.errors import TrisegError
from triseg.jobs import ModelOptions
from triseg.runlog import set_threads


def prepare(cfg: ModelOptions) -> None:
    """Set the CPU threads of a mode."""
    set_threads(cfg.workers)


def backend(requested: str | None, recorded: str | None = None) -> str:
    """The backend: the one a model file records wins; a conflicting --backend is an error."""
    if recorded is not None:
        if requested is not None and requested != recorded:
            raise TrisegError(f"--backend {requested} conflicts with the model file's backend {recorded}")
        return recorded
    chosen = requested or "fbgemm"
    quant.check_backend(chosen)
    return chosen


def run_dir(cfg: ModelOptions, kind: str, seed: int) -> Path:
    """TensorBoard folder ``<output-dir>/runs/<model>__<kind>__<seed>``."""
    return Path(cfg.output_dir) / "runs" / f"{cfg.model}__{kind}__{seed}"

