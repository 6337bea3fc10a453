"""The student: the INT8 teacher with tri-segment maps installed at its taps, and its coverage."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from torch import nn

from triseg.approx.config import LayerCodes
from triseg.approx.lut import LutEdit, float_maps, int8_maps, map_codes, map_rows
from triseg.data import Split, batches
from triseg.recorder import Edit, EditOnlyRecorder, Recorder, attach

Config = dict[str, LayerCodes]
HIST_OFFSET = 256


def install(model: nn.Module, config: Config, keep: set[str] | None = frozenset()) -> Recorder:
    """Attach a recorder that applies ``config`` (layer -> codes); ``keep`` = taps to store."""
    edits: dict[str, Edit] = {model.tap_name(layer): LutEdit(codes) for layer, codes in config.items()}
    return attach(model, Recorder(edits, keep=None if keep is None else set(keep)))


class BatchEditRecorder(Recorder):
    """Applies K configs in one forward pass: block k of the batch gets config k's map at every tap.

    Made once per search (the tap names are looked up once); :meth:`set_configs` before each forward
    builds one (K, 5) array of map rows per tap. The raw activations of ``keep`` are kept in ``raw``
    (as the maps left them, all K blocks), the taps seen in the pass in ``seen`` (name, scale), and the
    largest activation of one block so far in ``block_bytes``.
    """

    def __init__(self, model: nn.Module, keep: Sequence[str] = ()) -> None:
        super().__init__({}, keep=set(keep))
        self.tap_of = {layer: model.tap_name(layer) for layer in model.layers()}
        self.rows: dict[str, np.ndarray] = {}
        self.raw: dict[str, torch.Tensor] = {}
        self.seen: list[tuple[str, float]] = []
        self.copies, self.block_bytes = 1, 0

    def set_configs(self, configs: Sequence[Config]) -> None:
        """The maps of the next forward pass (its batch = K equal blocks, one per config)."""
        layers = {layer for config in configs for layer in config}
        self.rows = {self.tap_of[layer]: map_rows([c.get(layer) for c in configs]) for layer in layers}
        self.raw, self.seen, self.copies = {}, [], len(configs)

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        rows = self.rows.get(name)
        if x.is_quantized:
            scale = float(x.q_scale())
            if rows is not None:
                x = int8_maps(x, rows, int(x.q_zero_point()))
        else:
            qp = self.qparams(name, x)
            if qp is None and rows is not None:
                raise RuntimeError(f"tap {name}: edits need a fake-quant or INT8 model")
            scale = None if qp is None else qp[0]
            if rows is not None:
                x = float_maps(x, scale, rows)
        self.seen.append((name, scale))
        self.block_bytes = max(self.block_bytes, x.numel() * x.element_size() // self.copies)
        if name in self.keep:
            self.raw[name] = x
        return x


@dataclass
class LayerCoverage:
    """Counts at one tap: all activations, codes in (0, tmax], codes the map changed, codes set to 0."""

    total: int = 0
    in_range: int = 0
    changed: int = 0
    zeroed: int = 0

    def as_dict(self) -> dict[str, float]:
        t = max(1, self.total)
        return {"activations": self.total, "mapped_share": self.in_range / t, "changed_share": self.changed / t,
                "zeroed_share": self.zeroed / t}


class CoverageRecorder(Recorder):
    """Applies the maps and counts, per layer, how many codes they touched.

    The map is a function of the code, so one histogram of the codes before the map gives every
    count: codes in (0, tmax], codes the map changes, non-zero codes it sets to zero.
    """

    def __init__(self, config: Config, tap_of: dict[str, str]) -> None:
        super().__init__({tap_of[k]: LutEdit(v) for k, v in config.items()}, keep=set())
        self.layer_of = {tap_of[k]: k for k in config}
        self.stats: dict[str, LayerCoverage] = {k: LayerCoverage() for k in config}
        codes = torch.arange(-HIST_OFFSET, HIST_OFFSET)
        self.masks = {}
        for layer, c in config.items():
            mapped = map_codes(codes, c)
            self.masks[layer] = ((codes > 0) & (codes <= c.tmax), mapped != codes, (codes != 0) & (mapped == 0))

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer_of.get(name)
        if layer is None:
            return x
        scale, zero_point = self.qparams(name, x)
        if x.is_quantized:
            hist = torch.bincount(x.int_repr().flatten(), minlength=256)
            hist = torch.cat([torch.zeros(HIST_OFFSET - zero_point, dtype=hist.dtype), hist,
                              torch.zeros(zero_point, dtype=hist.dtype)])
        else:
            codes = torch.round(x.detach() / scale).clamp(-HIST_OFFSET, HIST_OFFSET - 1).long() + HIST_OFFSET
            hist = torch.bincount(codes.flatten().cpu(), minlength=2 * HIST_OFFSET)
        in_range, changed, zeroed = self.masks[layer]
        s = self.stats[layer]
        s.total += int(hist.sum())
        s.in_range += int(hist[in_range].sum())
        s.changed += int(hist[changed].sum())
        s.zeroed += int(hist[zeroed].sum())
        return self.maybe_edit(name, x)


@dataclass
class StudentEval:
    """Accuracy of the student on a split, with per-layer coverage."""

    accuracy: float
    predictions: torch.Tensor
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def mapped_share(self) -> float:
        """Share of all activations at approximated taps whose code lies in (0, tmax]."""
        total = sum(c["activations"] for c in self.coverage.values())
        return sum(c["mapped_share"] * c["activations"] for c in self.coverage.values()) / max(1, total)


@torch.no_grad()
def evaluate_student(model: nn.Module, config: Config, split: Split, batch_size: int = 256,
                     coverage: bool = True) -> StudentEval:
    """Run ``model`` with ``config`` installed over ``split`` (an empty config gives the teacher).

    ``coverage=False`` skips the per-layer counts (they cost a histogram per tap and batch).
    """
    tap_of = {layer: model.tap_name(layer) for layer in config}
    previous = model.recorder
    if coverage:
        recorder = attach(model, CoverageRecorder(config, tap_of))
    else:
        recorder = attach(model, EditOnlyRecorder({tap_of[k]: LutEdit(v) for k, v in config.items()}))
    preds = []
    try:
        model.eval()
        for x, _ in batches(split, batch_size):
            preds.append(model(x).argmax(1))
    finally:
        attach(model, previous)
    p = torch.cat(preds)
    acc = 100.0 * p.eq(split.y).float().mean().item()
    stats = recorder.stats if coverage else {}
    return StudentEval(acc, p, {k: v.as_dict() for k, v in stats.items()})
