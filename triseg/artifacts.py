"""Model files on disk: the original tool's names, atomic writes, and loading each stage back."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch

from triseg import quant
from triseg.errors import TrisegError
from triseg.models import build_model
from triseg.models.base import TapModel
from triseg.paths import atomic_open

ZOO_DIR = Path(os.environ.get("TRISEG_ZOO_DIR", Path(__file__).resolve().parents[1] / "zoo"))
STAGES = {
    "float": ("{model}_float_unfused.pth", "train_float"),
    "qat": ("{model}_qat_preconvert.pth", "train_qat"),
    "int8": ("{model}_int8.pth", "export_int8"),
}


def stage_path(output_dir: str | os.PathLike, model: str, stage: str) -> Path:
    """``outputs/{model}_float_unfused.pth`` and friends."""
    return Path(output_dir) / STAGES[stage][0].format(model=model)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to ``.<name>.<pid>.tmp`` beside ``path``, then rename over ``path`` (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as fh:
        torch.save(obj, fh)


def atomic_write_text(text: str, path: str | os.PathLike) -> None:
    """Write text to ``.<name>.<pid>.tmp`` beside ``path``, then rename."""
    with atomic_open(path, "w") as fh:
        fh.write(text)


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Pretty JSON (indent 2, final newline), written atomically."""
    atomic_write_text(json.dumps(obj, indent=2) + "\n", path)
    return Path(path)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> None:
    """Write bytes to ``.<name>.<pid>.tmp`` beside ``path``, then rename."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def load_checkpoint(path: str | os.PathLike, what: str = "checkpoint", device: str = "cpu", *,
                    weights_only: bool = False,
                    remedy: str = "delete it to start again, or drop --resume") -> dict[str, Any]:
    """A checkpoint as a dict; a damaged or foreign file is a one-line error ending in ``remedy``.

    ``weights_only`` loads with torch's safe unpickler (tensors, containers and plain values only).
    """
    try:
        state = torch.load(path, map_location=device, weights_only=weights_only)
    except Exception as exc:  # truncated zips and garbage pickles fail in many ways
        raise TrisegError(f"{what} {path} is damaged or not a torch file ({type(exc).__name__}): {remedy}") from None
    if not isinstance(state, dict):
        raise TrisegError(f"{path} is not a triseg {what}: {remedy}")
    return state


def resume_from(checkpoint: str | os.PathLike, resume: bool, resume_or_start: bool = False) -> bool:
    """Whether a run continues from ``checkpoint``: with ``--resume`` it must exist (a one-line error if not);
    with ``--resume-or-start`` it is used when present."""
    exists = Path(checkpoint).is_file()
    if resume and not exists and not resume_or_start:
        raise TrisegError(f"--resume: no checkpoint {checkpoint} to continue; drop --resume to start from "
                          f"scratch, or pass --resume-or-start")
    return exists and (resume or resume_or_start)


def save_stage(model: torch.nn.Module, output_dir: str | os.PathLike, name: str, stage: str,
               backend: str | None = None, **meta: Any) -> Path:
    """Save a model's state dict with the metadata needed to rebuild it."""
    path = stage_path(output_dir, name, stage)
    atomic_save({"model": name, "stage": stage, "backend": backend, "state_dict": model.state_dict(),
                 "meta": meta}, path)
    return path


def stage_file(output_dir: str | os.PathLike, name: str, stage: str) -> Path:
    """The file of one stage: in ``output_dir``, else in the model zoo (with a note), else a one-line error
    naming the command that makes it."""
    path = stage_path(output_dir, name, stage)
    zoo = stage_path(ZOO_DIR, name, stage)
    if not path.exists() and zoo.exists():
        print(f"note: {path} not found, using the zoo's {zoo}", file=sys.stderr)
        path = zoo
    if not path.exists():
        order = list(STAGES)
        before = [STAGES[s][1] for s in order[:order.index(stage)]]
        after = f" (after {', '.join(before)})" if before else ""
        raise TrisegError(f"{path} not found: run {STAGES[stage][1]} first{after}; {zoo_note(name, stage)}")
    return path


def zoo_note(name: str, stage: str) -> str:
    """What the zoo's manifest says about a stage it does not hold: how to rebuild a left-out stage, or
    which models it has."""
    try:
        manifest = json.loads((ZOO_DIR / "manifest.json").read_text())
    except (OSError, ValueError):
        manifest = {}
    manifest = manifest if isinstance(manifest, dict) else {}
    entry = manifest.get(name)
    left_out = entry.get("left_out", {}) if isinstance(entry, dict) else {}
    if isinstance(left_out, dict) and isinstance(left_out.get(stage), dict):
        return f"the zoo leaves out {name}'s {stage} stage, rebuild it with: {left_out[stage].get('rebuild')}"
    have = sorted(m for m, e in manifest.items() if isinstance(e, dict) and stage in e.get("files", {}))
    return (f"the zoo ({ZOO_DIR}) has no {stage_path(ZOO_DIR, name, stage).name}"
            + (f"; it has {stage} models of {', '.join(have)} (--model)" if have else ""))


def read_stage_file(path: Path, name: str, stage: str) -> dict[str, Any]:
    """The blob in ``path``, checked to be the ``stage`` of model ``name``."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise TrisegError(f"{path} is not a readable triseg model file ({type(exc).__name__}): run "
                          f"{STAGES[stage][1]} again, or restore the file") from None
    if not isinstance(blob, dict) or blob.get("model") != name or blob.get("stage") != stage:
        raise TrisegError(f"{path} does not hold the {stage} stage of {name}: run {STAGES[stage][1]} for it")
    if not isinstance(blob.get("state_dict"), dict):
        raise TrisegError(f"{path} holds no weights: run {STAGES[stage][1]} again, or restore the file")
    return blob


def sha256(path: str | os.PathLike) -> str:
    """Hex digest of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_for_qat(model: TapModel, backend: str) -> TapModel:
    """Fuse a float model and insert the backend's fake-quant modules (in place, train mode)."""
    model.train()
    model.fuse_model()
    return quant.prepare_qat(model, backend)


def qat_skeleton(name: str, backend: str) -> TapModel:
    """An untrained model fused and prepared for QAT: the shape QAT state dicts load into."""
    return prepare_for_qat(build_model(name), backend)


def _load_weights(model: TapModel, blob: dict[str, Any], path: Path, name: str, stage: str) -> TapModel:
    """``model`` with the weights of ``blob``; weights of another architecture are a one-line error."""
    try:
        model.load_state_dict(blob["state_dict"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise TrisegError(f"{path} holds weights that do not fit triseg's {name} ({type(exc).__name__}): run "
                          f"{STAGES[stage][1]} again") from None
    return model


def _backend_of(blob: dict[str, Any], path: Path) -> str:
    backend = blob.get("backend")
    if backend not in quant.BACKENDS:
        raise TrisegError(f"{path} records no known backend ({backend!r}): run {STAGES[blob['stage']][1]} again")
    return backend


def load_float(output_dir: str | os.PathLike, name: str) -> TapModel:
    """The trained float model (unfused), in eval mode."""
    path = stage_file(output_dir, name, "float")
    return _load_weights(build_model(name), read_stage_file(path, name, "float"), path, name, "float").eval()


def load_qat(output_dir: str | os.PathLike, name: str) -> tuple[TapModel, str]:
    """The QAT model (fake-quant, eval mode) and its backend."""
    path = stage_file(output_dir, name, "qat")
    blob = read_stage_file(path, name, "qat")
    backend = _backend_of(blob, path)
    return _load_weights(qat_skeleton(name, backend), blob, path, name, "qat").eval(), backend


def load_int8(output_dir: str | os.PathLike, name: str, engine: str | None = None) -> tuple[TapModel, str]:
    """The converted INT8 model (CPU, eval mode) packed for ``engine``, and its backend."""
    model, backend, _ = load_int8_file(stage_file(output_dir, name, "int8"), name, engine)
    return model, backend


def load_int8_file(path: Path, name: str, engine: str | None = None) -> tuple[TapModel, str, Path]:
    """The INT8 model in ``path`` packed for ``engine``, its backend and its path.

    ``engine`` defaults to :func:`triseg.quant.default_engine` of the file's backend.
    """
    blob = read_stage_file(path, name, "int8")
    backend = _backend_of(blob, path)
    engine = engine or quant.default_engine(backend)
    quant.check_engine(backend, engine)
    skeleton = qat_skeleton(name, backend).eval()
    with torch.no_grad():
        skeleton(torch.zeros(1, 3, 32, 32))  # observers need one batch before convert builds modules
    model = quant.convert(skeleton, engine)
    return _load_weights(model, blob, path, name, "int8").eval(), backend, path
