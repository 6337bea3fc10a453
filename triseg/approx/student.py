"""The student: the INT8 teacher with tri-segment maps installed at its taps, and its coverage."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from triseg.approx.config import LayerCodes
from triseg.approx.lut import LutEdit
from triseg.data import Split, batches
from triseg.recorder import Edit, Recorder, attach, codes_of

Config = dict[str, LayerCodes]


def install(model: nn.Module, config: Config, keep: set[str] | None = frozenset()) -> Recorder:
    """Attach a recorder that applies ``config`` (layer -> codes); ``keep`` = taps to store."""
    edits: dict[str, Edit] = {model.tap_name(layer): LutEdit(codes) for layer, codes in config.items()}
    return attach(model, Recorder(edits, keep=None if keep is None else set(keep)))


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
    """Applies the maps and counts, per layer, how many codes they touched."""

    def __init__(self, config: Config, tap_of: dict[str, str]) -> None:
        super().__init__({tap_of[k]: LutEdit(v) for k, v in config.items()}, keep=set())
        self.layer_of = {tap_of[k]: k for k in config}
        self.stats: dict[str, LayerCoverage] = {k: LayerCoverage() for k in config}

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer_of.get(name)
        if layer is None:
            return x
        qp = self.qparams(name, x)
        before = codes_of(x, *qp)
        x = self.maybe_edit(name, x)
        after = codes_of(x, *qp)
        tmax = self.edits[name].codes.tmax
        s = self.stats[layer]
        s.total += before.numel()
        s.in_range += int(((before > 0) & (before <= tmax)).sum())
        s.changed += int((before != after).sum())
        s.zeroed += int(((before != 0) & (after == 0)).sum())
        return x


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
def evaluate_student(model: nn.Module, config: Config, split: Split, batch_size: int = 256) -> StudentEval:
    """Run ``model`` with ``config`` installed over ``split`` (an empty config gives the teacher)."""
    tap_of = {layer: model.tap_name(layer) for layer in config}
    previous = model.recorder
    recorder = attach(model, CoverageRecorder(config, tap_of))
    preds = []
    try:
        model.eval()
        for x, _ in batches(split, batch_size):
            preds.append(model(x).argmax(1))
    finally:
        attach(model, previous)
    p = torch.cat(preds)
    acc = 100.0 * p.eq(split.y).float().mean().item()
    return StudentEval(acc, p, {k: v.as_dict() for k, v in recorder.stats.items()})
