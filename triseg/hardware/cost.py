"""The hardware cost model: what the multipliers of every conv and linear layer see.

Counted at the **input of every conv and linear layer** of the INT8 student (the activation operand
of each multiply-accumulate), per layer and image:

* ``skipped``: the operand is a real zero (code 0, including the zero padding of a conv): a
  zero-skipping datapath does no work;
* ``selected``: the operand is one of the two segment values v1/v2 of the tap that produced it
  (through max pooling, flattening or nothing): the product w·v is precomputed, so a select
  replaces the multiply;
* ``multiplied``: anything else, a real 8-bit multiply.

An operand whose producer is not an approximated tap (the image, an unapproximated layer, a residual
add) can only be skipped when it is zero. The producer of a layer's input is the most recent tap
with the same quantization scale in the forward pass (pooling and flattening keep the scale; a
requantizing op does not). The baseline is the teacher counted the same way: **zero-skipping INT8**
(its non-zero operands are multiplied).

Both execution paths are counted: the INT8 model (codes = ``int_repr - zero_point``) and its integer
simulation (codes = ``round(x / s_in)``), with identical results when their codes agree.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from triseg import quant
from triseg.approx.config import LayerCodes
from triseg.approx.intsim import SimLinearOrConv, grid_codes
from triseg.approx.lut import LutEdit
from triseg.approx.student import CoverageRecorder
from triseg.data import Split, batches
from triseg.recorder import Recorder, attach


@dataclass
class LayerCost:
    """MAC counts of one conv/linear layer over the counted images."""

    kind: str
    source: str | None
    macs: int = 0
    skipped: int = 0
    selected: int = 0
    weights: int = 0
    comparisons: int = 0

    @property
    def multiplied(self) -> int:
        return self.macs - self.skipped - self.selected

    def to_json(self, images: int) -> dict[str, Any]:
        per = max(1, images)
        return {"kind": self.kind, "source": self.source, "macs_per_image": self.macs / per,
                "skipped_share": self.skipped / max(1, self.macs), "selected_share": self.selected / max(1, self.macs),
                "multiplied_share": self.multiplied / max(1, self.macs), "weights": self.weights,
                "precomputed_products": 2 * self.weights if self.source else 0}


@dataclass
class CostCounts:
    """Per-layer counts of one model + config over ``images`` images, and the comparisons at each tap."""

    images: int = 0
    layers: dict[str, LayerCost] = field(default_factory=dict)
    tap_elements: dict[str, int] = field(default_factory=dict)
    predictions: list[torch.Tensor] = field(default_factory=list)
    coverage: dict[str, dict[str, float]] = field(default_factory=dict)
    image_multiplies: list[torch.Tensor] = field(default_factory=list)  # per batch, each image's real multiplies

    def accuracy(self, labels: torch.Tensor) -> float:
        """Top-1 accuracy (percent) of the predictions made while counting."""
        return 100.0 * torch.cat(self.predictions).eq(labels).float().mean().item()

    def total(self, key: str) -> int:
        return sum(getattr(c, key) for c in self.layers.values())


def _codes(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Integer activation codes of a consumer's input and their scale, on either path."""
    if x.is_quantized:
        return x.int_repr().to(torch.int64) - int(x.q_zero_point()), float(x.q_scale())
    s_in = float(module.s_in)
    return grid_codes(x.detach(), s_in).to(torch.int64), s_in


def _geometry(module: nn.Module) -> dict[str, Any] | None:
    """Kind, weight shape and conv geometry of a consumer (INT8 module or its simulation), else None."""
    if isinstance(module, SimLinearOrConv):
        info = module.info
    elif quant.is_quantized_module(module):
        info = quant.int8_layer(module)
        if info is None or info["kind"] not in ("conv", "linear"):
            return None
    else:
        return None
    return {"kind": info["kind"], "weight_shape": tuple(info["weight"].shape), "stride": info.get("stride"),
            "padding": info.get("padding"), "dilation": info.get("dilation"), "groups": info.get("groups", 1)}


def _element_weights(geo: dict[str, Any], x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """MACs each input element takes part in (broadcastable to ``x``), and MACs per image."""
    cout = geo["weight_shape"][0]
    if geo["kind"] == "linear":
        return torch.full((1, x.shape[1]), float(cout), dtype=torch.float64), cout * x.shape[1]
    _, cin_g, kh, kw = geo["weight_shape"]
    h, w = x.shape[-2:]
    (sh, sw), (ph, pw), (dh, dw) = geo["stride"], geo["padding"], geo["dilation"]
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    cover = F.conv_transpose2d(torch.ones(1, 1, oh, ow, dtype=torch.float64),
                               torch.ones(1, 1, kh, kw, dtype=torch.float64), stride=(sh, sw), dilation=(dh, dw))
    cover = cover[0, 0, ph:ph + h, pw:pw + w]
    full = torch.zeros(h, w, dtype=torch.float64)
    full[: cover.shape[0], : cover.shape[1]] = cover[:h, :w]
    per_out_channel = cout // geo["groups"]
    return (full * per_out_channel).view(1, 1, h, w), cout * oh * ow * cin_g * kh * kw


_CONSUMERS: "weakref.WeakKeyDictionary[nn.Module, list[tuple[str, nn.Module, tuple]]]" = weakref.WeakKeyDictionary()


def consumers(model: nn.Module) -> list[tuple[str, nn.Module, tuple]]:
    """Every conv/linear of ``model`` with its geometry as a hashable key (found once per model)."""
    if model not in _CONSUMERS:
        found = []
        for name, module in model.named_modules():
            geo = _geometry(module)
            if geo is not None:
                found.append((name, module, tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v)
                                                  for k, v in sorted(geo.items()))))
        _CONSUMERS[model] = found
    return _CONSUMERS[model]


@functools.lru_cache(maxsize=256)
def _position_weights(geo_key: tuple, shape: tuple[int, ...]) -> tuple[torch.Tensor, int]:
    """:func:`_element_weights` of a layer for an input of ``shape`` without the batch and channel axes of a
    conv input ((H, W)) or the batch axis of a linear input ((F,)), and the MACs per image (cached: they
    depend on the layer's geometry and the input shape only)."""
    weights, per_image = _element_weights(dict(geo_key), torch.empty(shape, dtype=torch.int8))
    full = weights.expand((1, *shape[1:]))
    return (full[0, 0] if len(shape) == 4 else full[0]).contiguous(), per_image


def _raw_codes(module: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A consumer input's raw codes (uint8 for INT8, int64 for the simulation) and the code of zero."""
    if x.is_quantized:
        return x.int_repr(), int(x.q_zero_point())
    return _codes(module, x)[0], 0


def _kept(block: torch.Tensor, zero: int, c: LayerCodes | None, quantized: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Masks of the operands that are zero, and that are zero, v1 or v2 of map ``c`` (not multiplied)."""
    is_zero = block == zero
    kept = is_zero.clone()
    for v in () if c is None else (c.v1, c.v2):
        if not quantized or 0 <= zero + v <= 255:  # a uint8 comparison would wrap a value beyond
            kept |= block == zero + v
    return is_zero, kept


def _per_image_position(mask: torch.Tensor) -> torch.Tensor:
    """A conv input's mask summed over channels, per image and position (N, H, W); a linear input's as it is."""
    if mask.dim() != 4:
        return mask
    if mask.is_contiguous(memory_format=torch.channels_last):  # sum along the contiguous channel axis
        return mask.permute(0, 2, 3, 1).sum(3, dtype=torch.int32)
    return mask.sum(1, dtype=torch.int32)


def _macs_of(mask: torch.Tensor, weights: torch.Tensor) -> int:
    """MACs of the masked elements: the mask summed over batch and channels, weighted per position."""
    per_position = _per_image_position(mask).sum(0, dtype=torch.int32)
    return round(float((per_position.to(torch.float64) * weights).sum()))


def _image_macs(mask: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MACs of the masked elements of each image (float64 holding exact integers)."""
    per_image = _per_image_position(mask).to(torch.float64) * weights
    return per_image.flatten(1).sum(1)


def _blocks(module: nn.Module, x: torch.Tensor, geo_key: tuple, maps: Sequence[LayerCodes | None]):
    """Per equal block of a consumer input's batch, one per map: the block's raw codes, the code of zero,
    its map, the MACs of each position, the block's MACs (padding included) and its elements' MACs."""
    codes, zero = _raw_codes(module, x)
    weights, per_image = _position_weights(geo_key, tuple(codes.shape))
    n = codes.shape[0] // len(maps)
    per_element = float(weights.sum()) * (codes.shape[1] if codes.dim() == 4 else 1)
    for i, c in enumerate(maps):
        yield codes[i * n:(i + 1) * n], zero, c, weights, per_image * n, round(per_element * n)


def operand_macs(module: nn.Module, x: torch.Tensor, geo_key: tuple,
                 maps: Sequence[LayerCodes | None]) -> list[tuple[int, int, int, int]]:
    """At a consumer's input ``x`` split into ``len(maps)`` equal blocks of its batch: per block, its MACs
    (padding included), the MACs of its elements, and of those the MACs whose operand is zero and whose
    operand is v1 or v2 of the block's map (``None``: the source is not approximated).

    Masks of the raw codes summed over batch and channels and weighted by the MACs of each position;
    no histogram, and uint8 codes are compared without wrapping.
    """
    out = []
    for block, zero, c, weights, macs, counted in _blocks(module, x, geo_key, maps):
        is_zero, kept = _kept(block, zero, c, x.is_quantized)
        zeros = _macs_of(is_zero, weights)
        out.append((macs, counted, zeros, _macs_of(kept, weights) - zeros))
    return out


def multiplied_per_block(module: nn.Module, x: torch.Tensor, geo_key: tuple,
                         maps: Sequence[LayerCodes | None]) -> list[int]:
    """Real multiplies at a consumer's input for each block of its batch (what :func:`operand_macs` leaves
    multiplied, with one weighted sum a block instead of two)."""
    return [counted - _macs_of(_kept(block, zero, c, x.is_quantized)[1], weights)
            for block, zero, c, weights, _, counted in _blocks(module, x, geo_key, maps)]


class CostRecorder(Recorder):
    """Applies the maps at the taps, notes each tap's scale, and counts every consumer's operands.

    ``coverage``: also count, per approximated layer, the codes its map touched (a :class:`CoverageRecorder`
    applies the maps then), so one pass gives the cost counts and the coverage. ``per_image``: also each
    image's real multiplies (``counts.image_multiplies``, one tensor a forward pass). ``counts``: add to
    these counts (of other images) instead of new ones.
    """

    def __init__(self, model: nn.Module, config: dict[str, LayerCodes], keep: set[str] | None = frozenset(),
                 coverage: bool = False, per_image: bool = False, counts: CostCounts | None = None) -> None:
        self.tap_layer = {model.tap_name(layer): layer for layer in model.layers()}
        super().__init__({model.tap_name(k): LutEdit(v) for k, v in config.items()},
                         keep=None if keep is None else set(keep))
        self.coverage = CoverageRecorder(config, {k: model.tap_name(k) for k in config}) if coverage else None
        self.config = config
        self.counts = counts if counts is not None else CostCounts()
        self.per_image = per_image
        self.pass_multiplies: torch.Tensor | float = 0.0  # per image, in the current forward pass (per_image)
        self.recent: list[tuple[float, str]] = []  # (scale, layer) of the taps seen in this forward pass
        self.hooks = [module.register_forward_pre_hook(self._consumer(name, key))
                      for name, module, key in consumers(model)]

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        if self.coverage is not None:
            self.coverage.producers = self.producers  # attach() sets them on this recorder
            x = self.coverage(name, x)
        else:
            x = self.maybe_edit(name, x)
        if self.keep is None or name in self.keep:
            self.record(name, x)
        layer = self.tap_layer.get(name)
        qp = self.qparams(name, x)
        if layer is not None and qp is not None:
            self.recent.append((qp[0], layer))
            if layer in self.config:
                per_image = x[0].numel()
                self.counts.tap_elements[layer] = self.counts.tap_elements.get(layer, 0) + per_image * x.shape[0]
        return x

    def _consumer(self, name: str, key: tuple):
        geo = dict(key)

        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0]
            scale = float(x.q_scale()) if x.is_quantized else float(module.s_in)
            source = next((layer for s, layer in reversed(self.recent) if s == scale), None)
            c = self.config.get(source)
            if self.per_image:  # the same totals, summed from each image's
                [(block, code0, _, weights, macs, counted)] = _blocks(module, x, key, [c])
                is_zero, kept = _kept(block, code0, c, x.is_quantized)
                zeros, kept_macs = _image_macs(is_zero, weights), _image_macs(kept, weights)
                zero, selected = round(float(zeros.sum())), round(float(kept_macs.sum() - zeros.sum()))
                self.pass_multiplies = self.pass_multiplies + (counted / len(block) - kept_macs)
            else:
                [(macs, counted, zero, selected)] = operand_macs(module, x, key, [c])
            skipped = zero + (macs - counted)
            cost = self.counts.layers.setdefault(name, LayerCost(geo["kind"], source if source in self.config
                                                                 else None))
            cost.macs += macs
            cost.skipped += skipped
            cost.selected += selected
            cost.weights = int(torch.tensor(geo["weight_shape"]).prod())
        return hook

    def close(self) -> None:
        for h in self.hooks:
            h.remove()

    def multiplies(self) -> int:
        """Real multiplies counted so far (all MACs less skipped and selected ones)."""
        return self.counts.total("multiplied")


@torch.no_grad()
def count(model: nn.Module, config: dict[str, LayerCodes], split: Split, batch_size: int = 256,
          coverage: bool = False, per_image: bool = False, counts: CostCounts | None = None) -> CostCounts:
    """Run ``model`` with ``config`` over ``split``, count every consumer's operands, keep the predictions
    (``coverage``: and the per-layer coverage of the maps, as :func:`~triseg.approx.student.evaluate_student`
    gives it; ``per_image``: and each image's multiplies). ``counts``: add to these counts of earlier images
    (coverage is not added up: not both)."""
    if coverage and counts is not None:
        raise ValueError("count(): coverage cannot be added to earlier counts")
    recorder = CostRecorder(model, config, coverage=coverage, per_image=per_image, counts=counts)
    previous = model.recorder
    attach(model, recorder)
    model.eval()
    try:
        for x, _ in batches(split, batch_size):
            recorder.recent, recorder.pass_multiplies = [], 0.0
            recorder.counts.predictions.append(model(x).argmax(1))
            recorder.counts.images += len(x)
            if per_image:
                recorder.counts.image_multiplies.append(torch.as_tensor(recorder.pass_multiplies).expand(len(x)))
    finally:
        recorder.close()
        attach(model, previous)
    if recorder.coverage is not None:
        recorder.counts.coverage = {k: v.as_dict() for k, v in recorder.coverage.stats.items()}
    return recorder.counts


@dataclass
class HardwareReport:
    """The student's counts against the teacher's (zero-skipping INT8), with an energy estimate."""

    split: str
    images: int
    student: CostCounts
    teacher: CostCounts
    energy_table: dict[str, Any]

    def totals(self) -> dict[str, Any]:
        from triseg.hardware.energy import energy_pj

        s, t = self.student, self.teacher
        dense = s.total("macs")
        teacher_mult = t.total("macs") - t.total("skipped")
        student_mult = s.total("multiplied")
        per = max(1, self.images)
        comparisons = 3 * sum(s.tap_elements.values())
        e_student = energy_pj(self.energy_table, student_mult, s.total("selected"), comparisons) / per
        e_teacher = energy_pj(self.energy_table, teacher_mult, 0, 0) / per
        return {
            "macs_per_image": dense / per,
            "multiplies_left_vs_zero_skipping_int8": student_mult / max(1, teacher_mult),
            "multiplies_left_vs_dense_int8": student_mult / max(1, dense),
            "multiplies_per_image": student_mult / per,
            "selects_per_image": s.total("selected") / per,
            "skips_per_image": s.total("skipped") / per,
            "teacher_multiplies_per_image": teacher_mult / per,
            "precomputed_products": sum(2 * c.weights for c in s.layers.values() if c.source),
            "comparisons_per_image": comparisons / per,
            "comparators_per_tap": {k: 3 for k in s.tap_elements},
            "energy_estimate_pj_per_image": {"student": e_student, "teacher_zero_skipping": e_teacher,
                                             "ratio": e_student / e_teacher if e_teacher else float("nan")},
        }

    def multiplies_left(self) -> float:
        """The student's real multiplies over the zero-skipping teacher's."""
        teacher = self.teacher.total("macs") - self.teacher.total("skipped")
        return self.student.total("multiplied") / max(1, teacher)

    def to_json(self) -> dict[str, Any]:
        return {"split": self.split, "images": self.images, "totals": self.totals(),
                "layers": {k: c.to_json(self.images) for k, c in self.student.layers.items()},
                "energy_table": self.energy_table}


def hardware_report(model: nn.Module, config: dict[str, LayerCodes], split: Split, split_name: str,
                    energy_table: dict[str, Any] | None = None, batch_size: int = 256) -> HardwareReport:
    """Count the student and the teacher on ``split`` (the split being evaluated)."""
    from triseg.hardware.energy import DEFAULT_TABLE

    student = count(model, config, split, batch_size)
    teacher = count(model, {}, split, batch_size)
    return HardwareReport(split_name, student.images, student, teacher, energy_table or DEFAULT_TABLE)


def as_dict(counts: CostCounts) -> dict[str, Any]:
    """Raw counts (for tests and debugging)."""
    return {"images": counts.images, "layers": {k: {**asdict(c), "multiplied": c.multiplied}
                                                for k, c in counts.layers.items()},
            "tap_elements": counts.tap_elements}
