"""Integer-only inference for LSQ models: the export format and the engine that runs it.

The engine (:class:`IntegerModel`) needs only torch and the exported file. After the input is
quantized (one float division and rounding), every tensor is an integer tensor:

* conv / linear: int8 weight codes (int16 where a kept BN's sign flip gives 128), activation codes,
  int32 bias at scale ``s_in * s_w``; the multiply-accumulate is int32 arithmetic. CPU torch has no
  integer conv2d, so the MAC kernel runs as a floating-point conv on the exact integer values and is
  cast straight back to int64. Export bounds every layer's accumulator
  (``K * max|x| * max|w| + max|b|``, asserted below 2**31); below 2**24 the layer uses float32 (exact:
  every product and partial sum is an integer float32 holds), otherwise float64 (exact below 2**53).
  No rounding happens anywhere, whatever the summation order, as long as the kernel multiplies and adds
  (direct or im2col+GEMM conv, no Winograd/FFT; the tests check the float32 path against an int64
  unfold+matmul reference).
* MAC precision is pinned, not inherited: :func:`mac` moves its operands to the CPU and runs the
  kernel inside :func:`ieee_fp32`, which sets oneDNN's fp32 math mode for conv and matmul
  (``torch.backends.mkldnn.conv.fp32_precision``, ``torch.backends.mkldnn.matmul.fp32_precision``)
  to ``"ieee"`` for the call and restores it afterwards. Those two are the only switches that can
  lower a CPU float32 conv or linear: with ``"bf16"`` (set there, through ``torch.backends.mkldnn``
  or the global ``torch.backends.fp32_precision``) oneDNN rounds the operands to bfloat16 on CPUs
  with bf16 support, so any operand above 256 in magnitude (the sums of codes the classifier reads
  after global pooling, for one) stops being exact; the tests check the kernel under that setting.
  The TF32 switches (``torch.backends.cuda.matmul.fp32_precision``,
  ``torch.backends.cudnn.conv.fp32_precision`` and the older ``allow_tf32`` flags) only act on
  CUDA kernels, the bf16/fp16 reduced-precision-reduction flags only on half-precision GEMMs, and
  float64 has no reduced-precision mode, so none of them can reach this kernel. The switches are
  process-global: another thread's float32 oneDNN ops also run in IEEE mode during a call.
* requantization (Jacob et al. 2018, gemmlowp): ``M = s_in * s_w / s_out`` is stored as an int32
  multiplier ``M0`` in [2**30, 2**31) and a shift ``n`` with ``M = M0 * 2**-(31 + n)``, one pair per
  output channel for a conv with per-channel weight steps (as TFLite does); the code is
  ``clamp((acc * M0 + 2**(30 + n)) >> (31 + n), Qn, Qp)``, computed exactly in int64 and rounded once
  (round half up; gemmlowp's two-step SaturatingRoundingDoublingHighMul + RoundingDivideByPOT rounds
  twice). ReLU is the clamp at Qn = 0.
* residual add: each input (an int32 accumulator or codes) gets its own (M0, n) to the add's output
  step; the product with the larger shift is floored to the smaller shift (its dropped fraction can
  never change the rounded result), the two are summed in int64 and rounded once, half up, exactly
  as ``round(a * Ma + b * Mb)`` computed with fractions (:func:`add_requantize` has the argument and
  the int64 bounds).
* a conv whose input is wider than its activation width (a residual stream kept at more bits)
  first rescales the input codes to its own step with one (M0, n), rounded once and clamped;
* max pooling works on codes; global average pooling is a sum of codes whose 1/(H*W) is folded into
  the classifier's scale; the logits are the classifier's int32 accumulators (``logit_scale`` turns
  them into floats for reporting only).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import torch
import torch.nn.functional as F

from triseg.errors import TrisegError, first_line
from triseg.lsq.ops import handler, op_table

if TYPE_CHECKING:
    from triseg.lsq.models import Op
    from triseg.lsq.qat import QuantNet

FORMAT = "triseg-lsq-int/2"  # /2 added per-channel multipliers; /1 files (per-tensor only) read the same
READABLE_FORMATS = (FORMAT, "triseg-lsq-int/1")
INT32_LIMIT = 2**31
FLOAT32_EXACT = 2**24
MAX_INPUT_SIDE = 4096  # the largest image side (or channel count) an integer model file may declare


def quantize_multiplier(m: float) -> tuple[int, int]:
    """``(M0, n)`` with ``M0 * 2**-(31 + n)`` within 2**-32 * 2**-n of ``m``, 2**30 <= M0 < 2**31 and
    -30 <= n <= 30 (every shift ``31 + n`` in [1, 61]: the bounds :func:`add_requantize` relies on)."""
    if not 2.0**-31 <= m < 2.0**29:
        raise TrisegError(f"requantization multiplier {m:g} is outside [2^-31, 2^29): the step sizes are degenerate")
    mantissa, exponent = math.frexp(m)
    m0 = round(mantissa * 2**31)
    if m0 == 2**31:
        m0, exponent = m0 // 2, exponent + 1
    return m0, -exponent


Multiplier = tuple[int, int] | tuple[torch.Tensor, torch.Tensor]


def multipliers(scale: torch.Tensor, step: float) -> Multiplier:
    """``(M0, n)`` for ``scale / step``: two ints for one scale, two int64 tensors (one pair per output
    channel) for a layer with per-channel weight steps."""
    if scale.numel() == 1:
        return quantize_multiplier(float(scale) / step)
    pairs = [quantize_multiplier(float(s) / step) for s in scale.flatten()]
    return torch.tensor([m0 for m0, _ in pairs]), torch.tensor([n for _, n in pairs])


def _channels(v: int | torch.Tensor, ndim: int) -> torch.Tensor:
    """``v`` as an int64 tensor that broadcasts along dim 1 (the channels) of an ``ndim``-d tensor."""
    t = torch.as_tensor(v, dtype=torch.int64)
    return t.view(1, -1, *[1] * (ndim - 2)) if t.ndim else t


def requantize_(acc: torch.Tensor, m0: int | torch.Tensor, n: int | torch.Tensor) -> torch.Tensor:
    """In place: ``round(acc * M0 * 2**-(31 + n))`` exactly, halves up (``|acc| < 2**31`` keeps the product
    below 2**62); ``m0`` and ``n`` are ints or one value per channel."""
    m0, shift = _channels(m0, acc.ndim), 31 + _channels(n, acc.ndim)
    return acc.mul_(m0).add_(torch.ones_like(shift) << (shift - 1)).bitwise_right_shift_(shift)


def add_requantize(a: torch.Tensor, b: torch.Tensor, m0n: list) -> torch.Tensor:
    """``round(a * Ma + b * Mb)`` (half up) on int64, rounded once; exact for ``|a|, |b| <= 2**31``.
    Each multiplier is two ints or one pair per channel (the inputs are paired element by element).

    With ``P = a * M0a`` and ``Q = b * M0b`` (both below 2**62 in magnitude), ``na >= nb`` (the
    inputs are swapped where it is not), ``d = na - nb`` and ``s = 31 + nb``, the exact sum is
    ``(P / 2**d + Q) / 2**s``, and ``((P >> d) + Q + 2**(s-1)) >> s`` rounds it: ``P >> d`` drops a
    fraction ``0 <= f < 1``, and ``floor((N + f) / 2**s) == floor(N / 2**s)`` for every integer ``N``.
    That sum can pass 2**63 (two int32 accumulators near 2**31 with equal shifts), so it
    is halved as it is formed: ``(X + Q) >> 1 == (X >> 1) + (Q >> 1) + (X & Q & 1)`` with
    ``X = (P >> d) + 2**(s-1)``. As ``n`` from :func:`quantize_multiplier` lies in [-30, 30],
    ``1 <= s <= 61``, ``|X| < 2**62 + 2**60`` and no intermediate reaches 2**63.
    """
    (m0a, na), (m0b, nb) = ((_channels(m0, a.ndim), _channels(n, a.ndim)) for m0, n in m0n)
    swap = na < nb
    if swap.ndim == 0:  # one multiplier per input: swap the inputs, not every element
        if swap:
            a, b, m0a, m0b, na, nb = b, a, m0b, m0a, nb, na
    else:
        a, b = torch.where(swap, b, a), torch.where(swap, a, b)
        m0a, m0b = torch.where(swap, m0b, m0a), torch.where(swap, m0a, m0b)
        na, nb = torch.where(swap, nb, na), torch.where(swap, na, nb)
    s = 31 + nb
    x = (a * m0a).bitwise_right_shift_(na - nb).add_(torch.ones_like(s) << (s - 1))
    q = b * m0b
    return (x >> 1).add_(q >> 1).add_(x & q & 1).bitwise_right_shift_(s - 1)


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """oneDNN conv and matmul in full IEEE float32 inside the block, whatever the global settings.

    Each switch is put back afterwards. Its getter reports an inherited value (from
    ``torch.backends.mkldnn`` or ``torch.backends``) as its own, so a switch that read the same as
    its backend is restored to ``"none"`` (inherit again) rather than frozen at that value.
    """
    switches = (torch.backends.mkldnn.conv, torch.backends.mkldnn.matmul)
    inherited = torch.backends.mkldnn.fp32_precision
    saved = [s.fp32_precision for s in switches]
    try:
        for s in switches:
            s.fp32_precision = "ieee"
        yield
    finally:
        for s, value in zip(switches, saved):
            s.fp32_precision = "none" if value == inherited else value


def mac(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, stride: int, padding: int,
        dtype: torch.dtype) -> torch.Tensor:
    """Integer conv (4-D ``w``) or linear plus bias, via an exact ``dtype`` CPU kernel in IEEE mode
    (module docstring); int64 on the CPU."""
    x, w, b = (t.to("cpu", dtype) for t in (x, w, b))
    with ieee_fp32():
        y = F.conv2d(x, w, b, stride, padding) if w.ndim == 4 else F.linear(x, w, b)
    return y.long()


class IntegerModel:
    """An exported LSQ model run on integer tensors only."""

    def __init__(self, blob: dict) -> None:
        if not isinstance(blob, dict) or blob.get("format") not in READABLE_FORMATS:
            raise TrisegError(f"not a {FORMAT} integer model")
        self.ops: list[dict] = blob["ops"]
        self.input: dict = blob["input"]
        self.input_shape = tuple(blob["input_shape"])
        self.logit_scale = float(blob["logit_scale"])
        if not math.isfinite(self.logit_scale) or self.logit_scale <= 0:
            raise TrisegError(f"its logit_scale {self.logit_scale} is not a positive number")
        self.meta: dict = dict(blob["meta"])

    @classmethod
    def load(cls, path: str | Path) -> "IntegerModel":
        """Load an exported file (plain tensors and numbers: ``torch.load(weights_only=True)``)."""
        path = Path(path)
        if not path.is_file():
            raise TrisegError(f"integer model {path} not found")
        try:
            engine = cls(torch.load(path, map_location="cpu", weights_only=True))
        except TrisegError as exc:
            raise TrisegError(f"{path}: {exc}") from None
        except Exception as exc:  # zip/pickle errors come in many types
            raise TrisegError(f"integer model {path} is damaged or not one ({type(exc).__name__}): export it "
                              f"again (lsq-qat or lsq-infer --export)") from None
        engine.check_runs(path)
        return engine

    def check_runs(self, path: Path) -> None:
        """Run one blank image through the ops: a file whose ops do not fit together is a one-line error here,
        not a crash half-way through an evaluation."""
        shape = self.input_shape
        if len(shape) != 3 or not all(isinstance(d, int) and 0 < d <= MAX_INPUT_SIDE for d in shape):
            raise TrisegError(f"integer model {path}: input shape {shape} is not (channels, height, width) with "
                              f"sides in [1, {MAX_INPUT_SIDE}]")
        try:
            logits = self.run(torch.zeros(1, *shape))
        except TrisegError as exc:
            raise TrisegError(f"{path}: {exc}") from None
        except Exception as exc:
            raise TrisegError(f"integer model {path} does not run ({type(exc).__name__}: {first_line(exc)}): export it "
                              f"again (lsq-qat or lsq-infer --export)") from None
        classes = self.meta.get("num_classes", logits.shape[-1])
        if logits.shape != (1, classes):
            raise TrisegError(f"integer model {path} gives outputs of shape {tuple(logits.shape[1:])} per image, not "
                              f"({classes},) logits: export it again (lsq-qat or lsq-infer --export)")

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The only float step: normalised images to signed input codes (on the CPU, like the engine)."""
        if tuple(x.shape[1:]) != self.input_shape:
            raise TrisegError(f"input shape {tuple(x.shape[1:])} differs from the exported {self.input_shape}")
        q = self.input
        return torch.clamp(x.to("cpu", torch.float32) / q["step"], q["qn"], q["qp"]).round().long()

    def run(self, x: torch.Tensor, record: dict[str, torch.Tensor] | None = None,
            feed: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """int64 logits (int32 accumulator values); ``record`` receives every op's integer output.

        ``feed`` (for checking one layer at a time) replaces the outputs of the ops it names, after
        they are recorded, so that later ops start from those codes instead of the engine's own.
        """
        env = {"input": self.quantize_input(x)}
        for op in self.ops:
            y = handler(ENGINE_OPS, op["kind"], op["name"])(op, env)
            out = op["out"]
            if out is not None:
                y = y.clamp_(out["qn"], out["qp"])
            elif op["relu"]:
                y = y.clamp_min_(0)
            if record is not None:
                record[op["name"]] = y
            env[op["name"]] = y if feed is None or op["name"] not in feed else feed[op["name"]]
        return env[self.ops[-1]["name"]]


def _requantized(acc: torch.Tensor, op: dict) -> torch.Tensor:
    """``acc`` rescaled to the op's output step when the op has an output quantizer."""
    return acc if op["out"] is None else requantize_(acc, *op["out"]["m0n"][0])


def _run_layer(op: dict, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Conv or linear: input codes rescaled to the layer's input step (when it has one), the exact MAC,
    then requantization."""
    x = env[op["inputs"][0]]
    rescale = op.get("in")
    if rescale is not None:
        x = requantize_(x.clone(), *rescale["m0n"]).clamp_(rescale["qn"], rescale["qp"])
    dtype = torch.float32 if op["mac_bound"] < FLOAT32_EXACT else torch.float64
    return _requantized(mac(x, op["weight"], op["bias"], op["stride"], op["padding"], dtype), op)


def _run_add(op: dict, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Residual add: both inputs rescaled to the output step with one rounding."""
    a, b = (env[i] for i in op["inputs"])
    return add_requantize(a, b, op["out"]["m0n"])


def _run_maxpool(op: dict, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Max pooling of codes (float64 holds them exactly)."""
    a = env[op["inputs"][0]]
    return _requantized(F.max_pool2d(a.double(), op["kernel"], op["stride"], op["padding"]).long(), op)


def _run_avgpool(op: dict, env: dict[str, torch.Tensor]) -> torch.Tensor:
    """Global average pooling as a sum of codes (the 1/(H*W) lives in the classifier's scale)."""
    return _requantized(env[op["inputs"][0]].sum((2, 3)), op)


ENGINE_OPS: dict[str, Callable[[dict, dict[str, torch.Tensor]], torch.Tensor]] = op_table({
    "conv": _run_layer, "linear": _run_layer, "add": _run_add, "maxpool": _run_maxpool, "avgpool": _run_avgpool,
})


@dataclass
class _Export:
    """What the export handlers share: the net, one traced batch and each tensor's integer bound."""

    net: QuantNet
    traced: dict[str, tuple[torch.Tensor, torch.Tensor]]
    bound: dict[str, int]

    def scale(self, name: str) -> torch.Tensor:
        """The scale of tensor ``name``."""
        return self.traced[name][1]


ExportResult = tuple[int, list[torch.Tensor]]


def _export_layer(ex: _Export, op: Op, entry: dict) -> ExportResult:
    """Weight codes, int32 bias and the accumulator bound (asserted below 2**31)."""
    from triseg.lsq.qat import bias_scale

    src = op.inputs[0]
    layer = ex.net.layers[op.name]
    s_in, in_bound = ex.scale(src), ex.bound[src]
    if layer.in_q is not None:  # the input codes are rescaled to the layer's own (narrower) step first
        q = layer.in_q
        entry["in"] = {"qn": q.qn, "qp": q.qp, "m0n": multipliers(s_in, float(q.step))}
        s_in, in_bound = q.step.detach(), max(-q.qn, q.qp)
    w, step, bias = layer.integer_view()
    acc_scale = bias_scale(s_in, step)
    b = torch.round(bias / acc_scale)
    limit = w[0].numel() * in_bound * int(w.abs().max()) + int(b.abs().max())
    if limit >= INT32_LIMIT:
        raise TrisegError(f"layer {op.name}: the accumulator may reach {limit}, beyond int32")
    # int8, or int16 for an 8-bit layer whose negative BN scale flipped a code -128 to 128 (QuantLayer.integer_view)
    wtype = torch.int8 if -128 <= int(w.min()) and int(w.max()) <= 127 else torch.int16
    entry.update(weight=w.to(wtype), bias=b.to(torch.int32), stride=layer.stride, padding=layer.padding,
                 mac_bound=limit)
    return limit, [acc_scale]


def _export_add(ex: _Export, op: Op, entry: dict) -> ExportResult:
    """An add must have an output quantizer: its result is clamped codes."""
    if op.name not in ex.net.acts:
        raise TrisegError(f"add {op.name} has no output quantizer; the integer engine cannot run it")
    q = ex.net.acts[op.name]
    return max(-q.qn, q.qp), [ex.scale(i) for i in op.inputs]


def _export_maxpool(ex: _Export, op: Op, entry: dict) -> ExportResult:
    """Max pooling keeps the input's codes."""
    src = op.inputs[0]
    return ex.bound[src], [ex.scale(src)]


def _export_avgpool(ex: _Export, op: Op, entry: dict) -> ExportResult:
    """A sum of H*W codes at scale ``s / (H * W)``."""
    v, s = ex.traced[op.inputs[0]]
    pixels = int(v.shape[2] * v.shape[3])
    return ex.bound[op.inputs[0]] * pixels, [s / pixels]


EXPORT_OPS: dict[str, Callable[[_Export, Op, dict], ExportResult]] = op_table({
    "conv": _export_layer, "linear": _export_layer, "add": _export_add, "maxpool": _export_maxpool,
    "avgpool": _export_avgpool,
})


def export_integer(net: QuantNet, input_shape: tuple[int, ...], path: str | Path | None = None) -> dict:
    """Turn a :class:`triseg.lsq.qat.QuantNet` into the integer format (and save it to ``path``).

    Weight codes and int32 biases are computed with the very float32 operations the fake-quant
    forward uses, so both models start from identical integers.
    """
    net = net.cpu().eval()
    iq = net.input_q
    ops = []
    with torch.no_grad():
        ex = _Export(net, net.trace(torch.zeros(1, *input_shape)), {"input": max(-iq.qn, iq.qp)})
        for op in net.ops:
            entry: dict = {"kind": op.kind, "name": op.name, "inputs": list(op.inputs), "relu": op.relu,
                           "kernel": op.kernel, "stride": op.stride, "padding": op.padding, "out": None}
            ex.bound[op.name], in_scales = handler(EXPORT_OPS, op.kind, op.name)(ex, op, entry)
            if op.name in net.acts:
                q = net.acts[op.name]
                step = float(q.step)
                entry["out"] = {"qn": q.qn, "qp": q.qp,
                                "m0n": [multipliers(s, step) for s in in_scales]}
                ex.bound[op.name] = max(-q.qn, q.qp)
            ops.append(entry)
    blob = {"format": FORMAT, "input": {"step": iq.step.detach().clone(), "qn": iq.qn, "qp": iq.qp},
            "input_shape": list(input_shape), "ops": ops, "logit_scale": float(ex.scale(net.ops[-1].name)),
            "meta": dict(net.meta)}
    if path is not None:
        from triseg.artifacts import atomic_save

        atomic_save(blob, path)
    return blob
