"""The teacher: a converted INT8 model (or its integer simulation on CUDA) and where it came from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from triseg import artifacts, quant
from triseg.approx.config import TrisegConfig, load_config
from triseg.approx.intsim import simulate
from triseg.errors import TrisegError
from triseg.models.base import TapModel
from triseg.runlog import resolve_device


@dataclass
class Teacher:
    """The student's base model with its name, backend, device and file identity."""

    name: str
    model: TapModel
    backend: str
    device: str
    path: Path
    sha256: str

    @property
    def top_code(self) -> int:
        """The largest activation code of the backend."""
        return quant.activation_top_code(self.backend)

    def identity(self) -> dict[str, Any]:
        """What a result records to know its teacher."""
        return {"file": str(self.path), "sha256": self.sha256, "backend": self.backend}

    def layers(self) -> list[str]:
        """The approximable layers of the model."""
        return self.model.layers()

    def check_config(self, cfg: TrisegConfig, source: str) -> TrisegConfig:
        """``cfg`` checked against this teacher: model name, backend, layers and every rule."""
        if cfg.model != self.name:
            raise TrisegError(f"config {source} is for model {cfg.model}, not {self.name}")
        if cfg.backend != self.backend:
            raise TrisegError(f"config {source} is for backend {cfg.backend}, the INT8 model uses {self.backend}")
        if not cfg.layers:
            raise TrisegError(f"config {source} approximates no layer")
        return cfg.validate(self.layers(), self.top_code)

    def load_config(self, path: str) -> TrisegConfig:
        """Read a config/result JSON and check it against this teacher."""
        return self.check_config(load_config(path), path)


def load_teacher(model: str, output_dir: str | os.PathLike = "outputs", engine: str | None = None,
                 device: str = "auto", backend: str | None = None) -> Teacher:
    """The INT8 model ``model`` from ``output_dir`` (else the zoo), on CPU, or simulated on CUDA.

    ``backend``, when given, must match the file's backend.
    """
    path = artifacts.stage_file(output_dir, model, "int8")
    int8, be, path = artifacts.load_int8_file(path, model, engine)
    if backend is not None and backend != be:
        raise TrisegError(f"--backend {backend} conflicts with the model file's backend {be}")
    dev = resolve_device(device)
    net = simulate(int8).to(dev) if dev == "cuda" else int8
    return Teacher(model, net, be, dev, path, artifacts.sha256(path))
