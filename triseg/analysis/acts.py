"""Activations at the tap points: seeded batch sampling, .npz dumps with a manifest, streaming stats."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from triseg.analysis.stats import RunningStats
from triseg.data import Split, normalize
from triseg.paths import atomic_open
from triseg.recorder import Recorder, attach

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def sample_batches(split: Split, batch_size: int, num_batches: int, seed: int = 0) -> list[torch.Tensor]:
    """Image indices of the first ``num_batches`` shuffled batches (the order of ``data.batches(shuffle=True)``)."""
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
    return [order[i:i + batch_size] for i in range(0, len(split), batch_size)][:num_batches]


def iterate(split: Split, index_batches: list[torch.Tensor], desc: str) -> Iterator[Batch]:
    """(indices, normalised images, labels) per batch, with a progress bar."""
    for idx in tqdm(index_batches, desc=desc, leave=False, mininterval=2.0):
        yield idx, normalize(split.x[idx]), split.y[idx]


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """np.savez_compressed to ``.<name>.<pid>.tmp`` beside ``path``, then rename."""
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)


@torch.no_grad()
def dump_activations(model: nn.Module, split: Split, index_batches: list[torch.Tensor], out_dir: Path,
                     codes: bool) -> dict[str, Any]:
    """Write one ``batch_XXXXX.npz`` per batch (one array per layer, plus ``indices`` and ``labels``).

    ``codes`` stores INT8 codes (int16, code = q - zero point) and each layer's scale and zero point;
    otherwise float32 values. Returns the per-layer part of the manifest.
    """
    layers = model.layers()
    taps = {layer: model.tap_name(layer) for layer in layers}
    previous = model.recorder
    recorder = attach(model, Recorder())
    info: dict[str, Any] = {}
    try:
        model.eval()
        for b, (idx, x, y) in enumerate(iterate(split, index_batches, "dump")):
            model(x)
            arrays: dict[str, np.ndarray] = {"indices": idx.numpy(), "labels": y.numpy()}
            for layer, tap in taps.items():
                rec = recorder.records[tap]
                if codes:
                    if rec.codes is None:
                        raise RuntimeError(f"tap {tap} carries no quantization parameters")
                    arrays[layer] = rec.codes.numpy().astype(np.int16)
                    arrays[f"{layer}.scale"] = np.float64(rec.scale)
                    arrays[f"{layer}.zero_point"] = np.int64(rec.zero_point)
                else:
                    arrays[layer] = rec.values.float().numpy()
                entry = info.setdefault(layer, {"tap": tap, "dtype": str(arrays[layer].dtype),
                                                "shape_per_image": list(arrays[layer].shape[1:])})
                if codes:
                    entry.update(scale=rec.scale, zero_point=rec.zero_point)
            atomic_savez(out_dir / f"batch_{b:05d}.npz", arrays)
    finally:
        attach(model, previous)
    return info


@torch.no_grad()
def activation_stats(model: nn.Module, split: Split, index_batches: list[torch.Tensor]) -> dict[str, dict[str, Any]]:
    """Per layer, streaming stats of the activation values (dequantized on an INT8 model)."""
    layers = model.layers()
    stats = {layer: RunningStats() for layer in layers}
    qparams: dict[str, tuple[float | None, int | None]] = {}
    previous = model.recorder
    recorder = attach(model, Recorder())
    try:
        model.eval()
        for _, x, _ in iterate(split, index_batches, "activations"):
            model(x)
            for layer in layers:
                rec = recorder.records[model.tap_name(layer)]
                stats[layer].update(rec.values)
                qparams[layer] = (rec.scale, rec.zero_point)
    finally:
        attach(model, previous)
    out = {}
    for layer, rs in stats.items():
        scale, zp = qparams.get(layer, (None, None))
        out[layer] = {**rs.as_dict(), "tap": model.tap_name(layer)}
        if scale is not None:
            out[layer].update(scale=scale, zero_point=zp)
    return out
