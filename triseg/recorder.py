"""Tap-point recorder: the forward pass of every model calls it at each approximated layer.

``record(name, x)`` stores the activation (INT8 codes and dequantized values); ``maybe_edit(name, x)``
replaces it when an edit is registered for that name. Both work on float, fake-quant (QAT) and
converted INT8 models: a quantized tensor carries its own scale and zero point, a fake-quant
activation takes them from the module that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from triseg import quant


class Edit(Protocol):
    """Replaces an activation; gets the tensor and its (scale, zero point)."""

    def __call__(self, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor: ...


def codes_of(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """Integer codes (q - zero point) of a quantized tensor or of a fake-quantized float tensor."""
    if x.is_quantized:
        return x.int_repr().to(torch.int16) - zero_point
    return torch.round(x / scale).to(torch.int16)


@dataclass
class Recorded:
    """One tap's activation; ``codes`` = quantized value - zero point (None on a float model)."""

    raw: torch.Tensor
    scale: float | None
    zero_point: int | None

    @property
    def values(self) -> torch.Tensor:
        """Dequantized (or float) values."""
        return self.raw.dequantize() if self.raw.is_quantized else self.raw

    @property
    def codes(self) -> torch.Tensor | None:
        """INT8 codes, or None on a float model."""
        return None if self.scale is None else codes_of(self.raw, self.scale, self.zero_point)


class Recorder:
    """Stores activations at tap points and applies registered edits (edit first, then record).

    ``keep`` limits which taps are stored (None stores all of them).
    """

    def __init__(self, edits: dict[str, Edit] | None = None, keep: set[str] | None = None) -> None:
        self.edits: dict[str, Edit] = dict(edits or {})
        self.keep = keep
        self.records: dict[str, Recorded] = {}
        self.producers: dict[str, nn.Module] = {}

    def qparams(self, name: str, x: torch.Tensor) -> tuple[float, int] | None:
        """(scale, zero point) of the activation at ``name``; None on a float model."""
        if x.is_quantized:
            return float(x.q_scale()), int(x.q_zero_point())
        producer = self.producers.get(name)
        if producer is None:
            return None
        try:
            return quant.output_qparams(producer)
        except Exception:
            return None

    def maybe_edit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        """Apply the edit registered for ``name``, if any."""
        edit = self.edits.get(name)
        if edit is None:
            return x
        qp = self.qparams(name, x)
        if qp is None:
            raise RuntimeError(f"tap {name}: edits need a fake-quant or INT8 model")
        return edit(x, *qp)

    def record(self, name: str, x: torch.Tensor) -> None:
        """Store the activation at ``name`` (overwrites the previous batch)."""
        qp = self.qparams(name, x)
        self.records[name] = Recorded(x.detach(), *(qp or (None, None)))

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        x = self.maybe_edit(name, x)
        if self.keep is None or name in self.keep:
            self.record(name, x)
        return x


class EditOnlyRecorder(Recorder):
    """Applies edits and stores nothing: the fast variant for search episodes."""

    def __init__(self, edits: dict[str, Edit] | None = None) -> None:
        super().__init__(edits, keep=set())


def attach(model: nn.Module, recorder: Recorder | None) -> Recorder | None:
    """Install ``recorder`` on a tap model (None detaches); returns it."""
    model.recorder = recorder
    if recorder is not None:
        recorder.producers = {
            model.tap_name(layer): model.get_submodule(path) for layer, path in model.TAP_MODULES.items()
        }
    return recorder

