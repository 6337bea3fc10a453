"""The teacher: a converted INT8 model (or its integer simulation on CUDA) and where it came from."""

from __future__ import annotations

import os
import sys
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
    """The student's base model with its name, backend, device and file identity.

    ``run_dir`` is the output folder it was loaded for: a result records the model file relative to it.
    """

    name: str
    model: TapModel
    backend: str
    device: str
    path: Path
    sha256: str
    run_dir: Path | None = None

    @property
    def top_code(self) -> int:
        """The largest activation code of the backend."""
        return quant.activation_top_code(self.backend)

    def identity(self, val_acc: float | None = None) -> dict[str, Any]:
        """What a result records to know its teacher: the model file (relative to the run's output folder
        when it lies there, else absolute), its sha256, backend and, when given, its validation accuracy."""
        out: dict[str, Any] = {"file": _relative(self.path, self.run_dir), "sha256": self.sha256,
                               "backend": self.backend}
        if val_acc is not None:
            out["val_acc"] = val_acc
        return out

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

    def load_config(self, path: str, allow_other: bool = False) -> TrisegConfig:
        """Read a config/result JSON and check it against this teacher, including the teacher a result
        records (see :func:`check_recorded_teacher`)."""
        cfg = self.check_config(load_config(path), path)
        check_recorded_teacher(cfg.extra.get("teacher"), self, path, allow_other)
        return cfg


def _relative(path: Path, folder: Path | None) -> str:
    """``path`` relative to ``folder`` when it lies inside it, else absolute."""
    full = path.resolve()
    if folder is not None:
        try:
            return full.relative_to(Path(folder).resolve()).as_posix()
        except ValueError:
            pass
    return str(full)


def recorded_sha(recorded: Any) -> str | None:
    """The sha256 a result's ``teacher`` entry records, if any."""
    sha = recorded.get("sha256") if isinstance(recorded, dict) else None
    return sha if isinstance(sha, str) and sha else None


def check_recorded_teacher(recorded: Any, teacher: Teacher, source: str, allow_other: bool = False) -> str | None:
    """None when ``teacher`` is the model the result ``source`` was searched on (or the result records none).

    On a mismatch: a one-line error, or with ``allow_other`` a warning on stderr whose text is returned
    (to be written into the output).
    """
    sha = recorded_sha(recorded)
    if sha is None or sha == teacher.sha256:
        return None
    what = (f"{source} was searched on another teacher ({recorded.get('file', '?')}, sha256 {sha[:12]}...) "
            f"than the loaded {teacher.path} (sha256 {teacher.sha256[:12]}...)")
    if not allow_other:
        raise TrisegError(f"{what}: pass the search's --output-dir (or --run-dir) holding its model, "
                          f"or --allow-other-teacher")
    note = f"{what}; evaluated anyway (--allow-other-teacher)"
    print(f"warning: {note}", file=sys.stderr)
    return note


def _candidates(model: str, recorded: Any, run_dir: Path, output_dir: Path) -> list[Path]:
    """Where a result's teacher may lie, in order: the recorded file, the run folder, --output-dir, the zoo."""
    out: list[Path] = []
    file = recorded.get("file") if isinstance(recorded, dict) else None
    if isinstance(file, str) and file:
        out += [Path(file)] if Path(file).is_absolute() else [run_dir / file, Path(file)]
    out += [artifacts.stage_path(d, model, "int8") for d in (run_dir, output_dir, artifacts.ZOO_DIR)]
    unique: list[Path] = []
    for p in out:
        if p.is_file() and all(not _same(p, q) for q in unique):
            unique.append(p)
    return unique


def _same(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def load_result_teacher(config_file: str, model: str, output_dir: str | os.PathLike, run_dir: str | os.PathLike,
                        engine: str | None = None, device: str = "auto", backend: str | None = None,
                        allow_other: bool = False) -> tuple[Teacher, TrisegConfig, str | None]:
    """The teacher a result (or config) JSON was searched on, the config checked against it, and a note.

    Looks for the model file the result records (relative to ``run_dir``, the search's output folder),
    then in ``run_dir``, ``output_dir`` and the zoo, and takes the first whose sha256 is the recorded one.
    When none is, that is a one-line error, or with ``allow_other`` the first model file found is used and
    the returned note (also printed as a warning) says so. A config that records no teacher uses the
    first model file found.
    """
    cfg = load_config(config_file)
    recorded = cfg.extra.get("teacher")
    sha = recorded_sha(recorded)
    found = _candidates(model, recorded, Path(run_dir), Path(output_dir))
    if not found:
        raise TrisegError(f"{artifacts.stage_path(run_dir, model, 'int8')} not found (nor in {output_dir} or the "
                          f"zoo): run export_int8 first")
    path = next((p for p in found if sha is None or artifacts.sha256(p) == sha), found[0])
    if path.resolve().parent != Path(output_dir).resolve():
        print(f"note: using the teacher {path}", file=sys.stderr)
    teacher = _load(model, path, Path(run_dir), engine, device, backend)
    return teacher, teacher.check_config(cfg, config_file), check_recorded_teacher(recorded, teacher, config_file,
                                                                                   allow_other)


def load_teacher(model: str, output_dir: str | os.PathLike = "outputs", engine: str | None = None,
                 device: str = "auto", backend: str | None = None) -> Teacher:
    """The INT8 model ``model`` from ``output_dir`` (else the zoo), on CPU, or simulated on CUDA.

    ``backend``, when given, must match the file's backend.
    """
    return _load(model, artifacts.stage_file(output_dir, model, "int8"), Path(output_dir), engine, device, backend)


def _load(model: str, path: Path, run_dir: Path, engine: str | None, device: str, backend: str | None) -> Teacher:
    int8, be, path = artifacts.load_int8_file(path, model, engine)
    if backend is not None and backend != be:
        raise TrisegError(f"--backend {backend} conflicts with the model file's backend {be}")
    dev = resolve_device(device)
    net = simulate(int8).to(dev) if dev == "cuda" else int8
    return Teacher(model, net, be, dev, path, artifacts.sha256(path), run_dir)
