"""LSQ: step-size gradient, fixed-point requantization, BN folding, integer engine vs fake-quant, CLI and configs."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from triseg.cli import main
from triseg.cli.parser import parse_options
from triseg.errors import TrisegError
from triseg.jobs import LsqInferConfig, LsqQatConfig, LsqTrainConfig
from triseg.lsq.integer import (IntegerModel, add_requantize, export_integer, ieee_fp32, mac, multipliers,
                                 quantize_multiplier, requantize_)
from triseg.lsq.integer import ENGINE_OPS, EXPORT_OPS
from triseg.lsq.models import FLOAT_OPS, ConvBN, Op, build_model
from triseg.lsq.ops import KINDS, op_table
from triseg.lsq.qat import QAT_OPS, QuantLayer, to_qat
from triseg.lsq.quantizer import MIN_STEP, LsqQuantizer, check_bits, keep_steps_positive, lsq_init, mse_init
from triseg.lsq.train import Distillation, load_lsq_checkpoint, model_from_checkpoint, pick_device

torch.set_num_threads(1)
ZOO_FLOAT = Path(__file__).resolve().parents[1] / "zoo/lsq/resnet_cifar10_float.pt"


def test_step_gradient_matches_hand_computation() -> None:
    q = LsqQuantizer(3, signed=True, per_sample=False)  # Qn = -4, Qp = 3
    with torch.no_grad():
        q.step.fill_(0.5)
    q.initialized.fill_(True)
    x = torch.tensor([-3.0, -0.6, 0.2, 0.9, 2.5], requires_grad=True)
    out = q(x)
    assert out.tolist() == pytest.approx([-2.0, -0.5, 0.0, 1.0, 1.5])
    out.sum().backward()
    # x/s = [-6, -1.2, 0.4, 1.8, 5]: clipped low -> Qn = -4; inside -> round(v) - v = 0.2, -0.4, 0.2;
    # clipped high -> Qp = 3. Sum = -1.0, times g = 1/sqrt(N * Qp) = 1/sqrt(15).
    assert q.step.grad.item() == pytest.approx(-1.0 / math.sqrt(15), rel=1e-6)
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_activation_grad_scale_uses_features_per_sample() -> None:
    q = LsqQuantizer(2, signed=False, per_sample=True)  # Qp = 3
    x = torch.full((4, 6), 10.0)  # all clipped high: d/ds = Qp per element
    q(x)  # first call initialises the step
    assert q.step.item() == pytest.approx(2 * 10.0 / math.sqrt(3))
    with torch.no_grad():
        q.step.fill_(1.0)
    q.step.grad = None
    q(x).sum().backward()
    assert q.step.grad.item() == pytest.approx(24 * 3 / math.sqrt(6 * 3), rel=1e-6)


def test_per_channel_steps_start_per_channel_and_scale_gradients_by_channel_size() -> None:
    q = LsqQuantizer(2, signed=True, per_sample=False, per_channel=True)  # Qn = -2, Qp = 1
    pattern = torch.tensor([[-3.0, -1.0, 0.0], [1.0, 2.0, 5.0]])  # mean |.| = 2
    w = torch.stack([pattern * v for v in (0.1, 1.0, 4.0)])  # three channels of 6 weights
    q.init_step(w)
    assert q.step.shape == (3, 1, 1)
    assert q.step.flatten().tolist() == pytest.approx([0.4, 4.0, 16.0])  # 2 * mean|w_c| / sqrt(1)
    # w/s = pattern / 4 in every channel: -0.75, -0.25, 0, 0.25, 0.5 (ties to even: 0), 1.25 (Qp = 1)
    codes = torch.tensor([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    torch.testing.assert_close(q(w), torch.stack([codes * s for s in (0.4, 4.0, 16.0)]))
    flat = torch.stack([torch.full((2, 3), v) for v in (0.1, 1.0, -4.0)])
    with torch.no_grad():
        q.step.copy_(torch.tensor([0.05, 0.25, 1.0]).view(3, 1, 1))
    q(flat).sum().backward()
    # w/s = 2, 4, -4 per channel: clipped at Qp = 1, Qp = 1 and Qn = -2; each channel's 6 gradients of
    # Qp or Qn sum before the scale g = 1/sqrt(6 * Qp)
    assert q.step.grad.flatten().tolist() == pytest.approx([6 / math.sqrt(6), 6 / math.sqrt(6), -12 / math.sqrt(6)])
    with pytest.raises(ValueError, match="not both"):
        LsqQuantizer(4, signed=True, per_sample=True, per_channel=True)


def _mse(x: torch.Tensor, step: torch.Tensor, qn: int, qp: int) -> float:
    return (torch.clamp(x / step, qn, qp).round() * step - x).square().mean().item()


@pytest.mark.parametrize("bits, signed, density", [(2, False, 1.0), (4, False, 1.0), (2, True, 1.0), (8, True, 1.0),
                                                  (2, False, 0.03), (4, False, 0.1)])
def test_mse_init_finds_the_step_of_least_error(bits: int, signed: bool, density: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(4096) * (torch.rand(4096) < density)  # density < 1: sparse, as activations after a ReLU
    x = x if signed else x.relu()
    q = LsqQuantizer(bits, signed=signed, per_sample=True, init="mse")
    q.init_step(x)
    base = lsq_init(x, q.qn, q.qp, False).item()
    dense = min(_mse(x, torch.tensor(base * m), q.qn, q.qp) for m in torch.logspace(-2, 2.5, 2000).tolist())
    assert _mse(x, q.step.detach(), q.qn, q.qp) <= 1.02 * dense
    assert q.step.item() != pytest.approx(base, rel=0.02)  # the paper's rule is not the least-error step here
    assert _mse(x, q.step.detach(), q.qn, q.qp) < _mse(x, torch.tensor(base), q.qn, q.qp)
    if density < 1:  # sparse values: the least-error step is many times the paper's (more than the old 2x cap)
        assert q.step.item() > 5 * base


def test_mse_init_per_channel_scales_with_each_channel() -> None:
    torch.manual_seed(0)
    pattern = torch.randn(1, 8, 3, 3)
    w = torch.cat([pattern * v for v in (0.01, 1.0, 30.0)])
    step = mse_init(w, -2, 1, per_channel=True)
    assert step.shape == (3, 1, 1, 1)
    ratios = (step.flatten() / torch.tensor([0.01, 1.0, 30.0])).tolist()
    assert ratios == pytest.approx([ratios[1]] * 3, rel=1e-4)
    assert step[1].item() == pytest.approx(mse_init(pattern, -2, 1, per_channel=False).item(), rel=1e-5)
    with pytest.raises(ValueError, match="unknown step initialisation"):
        LsqQuantizer(4, signed=True, per_sample=False, init="max")


@pytest.mark.parametrize("bits", [0, 1, 9, 16])
def test_bad_bit_widths_raise(bits: int) -> None:
    with pytest.raises(TrisegError, match="from 2 to 8 bits"):
        check_bits(bits, "--w-num-bits")
    with pytest.raises(TrisegError):
        to_qat(build_model("tiny_vgg"), 4, bits)


def test_to_qat_starts_steps_as_lsq_qat_does() -> None:
    """The library call and the ``lsq-qat`` job build the same model when neither names a step rule."""
    defaults = {f.name: f.default for f in dataclasses.fields(LsqQatConfig)}
    meta = to_qat(build_model("tiny_vgg"), 4, 4).meta
    assert meta["weight_step_init"] == defaults["weight_step_init"] == "lsq"
    assert meta["act_step_init"] == defaults["act_step_init"] == "mse"


TRAIN = ["--epochs", "1", "--output-dir", "run"]


@pytest.mark.parametrize("argv, message", [
    (["lsq-qat", *TRAIN, "--w-num-bits", "9"], "--w-num-bits must be from 2 to 8 bits, got 9"),
    (["lsq-qat", *TRAIN, "--a-num-bits", "1"], "--a-num-bits must be from 2 to 8 bits, got 1"),
    (["lsq-qat", *TRAIN, "--first-last-bits", "16"], "--first-last-bits must be from 2 to 8 bits, got 16"),
    (["lsq-qat", *TRAIN, "--residual-bits", "1"], "--residual-bits must be from 2 to 8 bits, got 1"),
    (["lsq-train", "--output-dir", "run", "--epochs", "0"], "--epochs must be a number >= 1, got 0"),
    (["lsq-qat", "--output-dir", "run", "--epochs", "0"], "--epochs must be a number >= 1, got 0"),
    (["lsq-train", *TRAIN, "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["lsq-qat", *TRAIN, "--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["lsq-train", *TRAIN, "--weight-decay", "-1"], "--weight-decay must be a number >= 0, got -1.0"),
    (["lsq-train", *TRAIN, "--label-smoothing", "1.5"], "--label-smoothing must be in [0, 1], got 1.5"),
    (["lsq-train", "--output-dir", "run"], "--epochs is required"),
    (["lsq-train", "--epochs", "1"], "--output-dir is required"),
    (["lsq-train", *TRAIN, "--train-limit", "0"], "--train-limit must be a number >= 1, got 0"),
    (["lsq-train", *TRAIN, "--eval-limit", "0"], "--eval-limit must be a number >= 1, got 0"),
    (["lsq-train", *TRAIN, "--val-size", "0"], "--val-size must be a number >= 1, got 0"),
    (["lsq-train", *TRAIN, "--batch-size", "0"], "--batch-size must be a number >= 1, got 0"),
    (["lsq-train", *TRAIN, "--seed", "-1"], "--seed must be a number >= 0, got -1"),
    (["lsq-train", *TRAIN, "--threads", "0"], "--workers must be a number >= 1, got 0"),
    (["lsq-train", *TRAIN, "--loader-workers", "-1"], "--loader-workers must be a number >= 0, got -1"),
    (["lsq-train", *TRAIN, "--cuda", "-2"], "--cuda must be a number >= -1, got -2"),
    (["lsq-train", *TRAIN, "--cuda", "0", "--device", "cpu"], "--cuda 0 conflicts with --device cpu"),
    (["lsq-qat", *TRAIN, "--cuda", "-1", "--device", "cuda"], "--cuda -1 (the CPU) conflicts with --device cuda"),
    (["lsq-train", *TRAIN, "--model", "vgg16"], "--model 'vgg16' is unknown; choose one of resnet_cifar10"),
    (["lsq-train", *TRAIN, "--log-dir", ""], "--log-dir is required"),
    (["lsq-qat", *TRAIN, "--kd-T", "0"], "--kd-T must be in (0, 1000], got 0"),
    (["lsq-qat", *TRAIN, "--kd-weight", "1.5"], "--kd-weight must be in [0, 1], got 1.5"),
    (["lsq-qat", *TRAIN, "--kd-weight", "0.7"], "--kd-T and --kd-weight need --teacher"),
    (["lsq-qat", *TRAIN, "--teacher", "missing.pt"], "missing.pt"),
    (["lsq-infer", "--json", "r.json"], "lsq-infer needs exactly one of --checkpoint (QAT) and --int-model"),
    (["lsq-infer", "--int-model", "m.pt", "--checkpoint", "c.pt"], "lsq-infer needs exactly one of"),
    (["lsq-infer", "--int-model", "m.pt", "--export", "e.pt"], "--export needs --checkpoint"),
    (["lsq-infer", "--int-model", "m.pt", "--json", "r.json", "--eval-limit", "0"],
     "--eval-limit must be a number >= 1, got 0"),
])
def test_cli_bad_values_are_one_line_and_create_nothing(argv: list[str], message: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # relative --output-dir, logs/ and qat_logs/ would appear here
    before = sorted(tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert sorted(tmp_path.rglob("*")) == before == []


def test_original_spellings_parse_to_the_new_options() -> None:
    old = parse_options(LsqQatConfig, ["--out-dir", "run", "--threads", "3", "--cuda", "-1", "--w-num-bits", "2",
                                       "--a-num-bits", "3", "--epochs", "2", "--float-checkpoint", "f.pt"])
    assert (old.output_dir, old.workers, old.cuda, old.w_num_bits, old.a_num_bits) == ("run", 3, -1, 2, 3)
    new = parse_options(LsqQatConfig, ["--output-dir", "run", "--workers", "3", "--cuda", "-1", "--w-num-bits", "2",
                                       "--a-num-bits", "3", "--epochs", "2", "--float-checkpoint", "f.pt"])
    assert new == old
    assert pick_device(old.device, old.cuda) == torch.device("cpu")
    infer = parse_options(LsqInferConfig, ["--int-model", "m.pt", "--threads", "2"])
    assert infer.workers == 2 and infer.loader_workers == 2


def test_defaults_match_the_original_tool() -> None:
    train = LsqTrainConfig(output_dir="run", epochs=1)
    qat = LsqQatConfig(output_dir="run", epochs=1)
    infer = LsqInferConfig(int_model="m.pt")
    assert (train.model, train.lr, train.weight_decay, train.log_dir, train.batch_size, train.amp) == \
        ("resnet_cifar10", 0.1, 5e-4, "logs", 128, False)
    assert (qat.lr, qat.weight_decay, qat.log_dir, qat.w_num_bits, qat.a_num_bits, qat.first_last_bits) == \
        (0.001, 1e-4, "qat_logs", 4, 4, 8)
    assert (infer.batch_size, infer.split, infer.dataset, infer.loader_workers) == (256, "test", "cifar10", 2)
    assert train.workers is None and train.cuda is None and train.device == "auto" and train.seed == 0


def test_workers_sets_threads_and_loader_workers_the_data_loader(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "int_model.pt"
    export_integer(_qat_model("tiny_vgg", 4, 4), (3, 32, 32), model)
    threads: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", threads.append)
    assert main(["lsq-infer", "--int-model", str(model), "--eval-limit", "8", "--workers", "3"]) == 0
    assert main(["lsq-infer", "--int-model", str(model), "--eval-limit", "8", "--threads", "5"]) == 0
    assert main(["lsq-infer", "--int-model", str(model), "--eval-limit", "8", "--loader-workers", "0"]) == 2
    assert threads == [3, 5]  # --loader-workers applies to --dataset imagenet only, and never sets threads
    cfg = parse_options(LsqTrainConfig, ["--output-dir", "r", "--epochs", "1", "--workers", "3"])
    assert (cfg.workers, cfg.loader_workers) == (3, 2)


def test_api_runs_lsq_infer_from_a_config(tmp_path: Path) -> None:
    from triseg import api

    model, out = tmp_path / "int_model.pt", tmp_path / "report.json"
    api.export_integer(_qat_model("tiny_vgg", 3, 3), (3, 32, 32), model)
    report = api.lsq_infer(api.LsqInferConfig(int_model=str(model), eval_limit=8, split="val", json=str(out)))
    assert report["images"] == 8 and report["split"] == "val" and report["a_bits"] == 3
    assert json.loads(out.read_text()) == report
    assert api.IntegerModel.load(model).meta["model"] == "tiny_vgg"


def test_device_and_cuda_combine() -> None:
    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto", -1) == pick_device("cpu", -1) == torch.device("cpu")
    assert LsqTrainConfig(output_dir="r", epochs=1, device="cuda", cuda=0).cuda == 0
    if torch.cuda.is_available():
        assert pick_device("auto") == torch.device("cuda") and pick_device("auto", 0) == torch.device("cuda:0")
    else:
        assert pick_device("auto") == torch.device("cpu")
        with pytest.raises(TrisegError, match="--cuda 0: no such CUDA device here"):
            pick_device("auto", 0)
        with pytest.raises(TrisegError, match="--device cuda requested"):
            pick_device("cuda")


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=2.0**-31, max_value=2.0**29, exclude_max=True, allow_nan=False))
@example(2.0**29 * (1 - 2.0**-40))  # M0 rounds up to 2**31: the largest exponent
def test_fixed_point_multiplier_reproduces_m(m: float) -> None:
    m0, n = quantize_multiplier(m)
    assert 2**30 <= m0 < 2**31 and -30 <= n <= 30
    # within 2**-31 absolutely for M < 1 (every conv requantization), relatively above that
    assert abs(Fraction(m0, 2 ** (31 + n)) - Fraction(m)) <= Fraction(1, 2**31) * max(1, Fraction(m))


def test_multiplier_outside_its_range_is_an_error() -> None:
    for m in (2.0**-32, 2.0**29, 2.0**30 * (1 - 2.0**-40)):  # the last would need n = -31 (a shift of 0)
        with pytest.raises(TrisegError, match="degenerate"):
            quantize_multiplier(m)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-4, max_value=4.0), st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1))
def test_requantize_is_exact_rounding(m: float, acc: int) -> None:
    m0, n = quantize_multiplier(m)
    got = requantize_(torch.tensor([acc]), m0, n).item()
    exact = Fraction(acc * m0, 2 ** (31 + n))
    assert got == math.floor(exact + Fraction(1, 2))


ADD_INPUT = st.one_of(st.integers(-(2**31), 2**31 - 1), st.integers(-128, 255))  # int32 accumulators or codes
M0 = st.integers(2**30, 2**31 - 1)
SHIFT = st.integers(-4, 20)  # n < 0 (M >= 1) happens when an input's step exceeds the add's


def _check_add_requantize(a: int, b: int, m0a: int, m0b: int, na: int, nb: int) -> None:
    """The engine's add equals round-half-up of the exact sum, with either input first."""
    exact = Fraction(a * m0a, 2 ** (31 + na)) + Fraction(b * m0b, 2 ** (31 + nb))
    expected = math.floor(exact + Fraction(1, 2))
    assert add_requantize(torch.tensor([a]), torch.tensor([b]), [(m0a, na), (m0b, nb)]).item() == expected
    assert add_requantize(torch.tensor([b]), torch.tensor([a]), [(m0b, nb), (m0a, na)]).item() == expected


@settings(max_examples=400, deadline=None)
@given(ADD_INPUT, ADD_INPUT, M0, M0, SHIFT, SHIFT)
@example(2**31 - 1, 2**31 - 1, 2**31 - 1, 2**31 - 1, 20, 20)  # P + Q + 2**(s-1) would pass 2**63
@example(-(2**31), -(2**31), 2**31 - 1, 2**31 - 1, 20, 20)
def test_add_requantize_rounds_once(a: int, b: int, m0a: int, m0b: int, na: int, nb: int) -> None:
    _check_add_requantize(a, b, m0a, m0b, na, nb)


@st.composite
def _near_ties(draw: st.DrawFn) -> tuple[int, int, int, int, int, int]:
    """Add inputs whose sum at the smaller shift lies within two units of a rounding tie.

    Random inputs almost never land there (about 2**-s of them do); ``b`` is solved for instead:
    with an odd ``M0b`` and ``s = 31 + nb <= 32``, ``b * M0b`` reaches any residue mod 2**s.
    """
    nb = draw(st.integers(-4, 1))
    na = nb + draw(st.integers(0, 20))
    a, m0a = draw(ADD_INPUT), draw(M0)
    m0b = 2 * draw(st.integers(2**29, 2**30 - 1)) + 1
    s = 31 + nb
    target = (2 ** (s - 1) + draw(st.integers(-2, 1)) - ((a * m0a) >> (na - nb))) % 2**s
    b = target * pow(m0b, -1, 2**s) % 2**s
    return a, b - 2**s if b >= 2 ** (s - 1) else b, m0a, m0b, na, nb


@settings(max_examples=400, deadline=None)
@given(_near_ties())
def test_add_requantize_rounds_once_near_ties(case: tuple[int, int, int, int, int, int]) -> None:
    _check_add_requantize(*case)


CHANNEL_M = st.lists(st.floats(min_value=1e-4, max_value=4.0), min_size=3, max_size=3)


@settings(max_examples=100, deadline=None)
@given(CHANNEL_M, st.lists(st.integers(min_value=-(2**31) + 1, max_value=2**31 - 1), min_size=12, max_size=12))
def test_per_channel_requantize_is_exact_rounding(ms: list[float], accs: list[int]) -> None:
    m0, n = multipliers(torch.tensor(ms), 1.0)
    got = requantize_(torch.tensor(accs).view(2, 3, 2), m0, n)  # (N, C, L): channel c uses (m0[c], n[c])
    for (i, c, j), value in zip(((i, c, j) for i in range(2) for c in range(3) for j in range(2)), got.flatten()):
        exact = Fraction(accs[i * 6 + c * 2 + j] * int(m0[c]), 2 ** (31 + int(n[c])))
        assert value.item() == math.floor(exact + Fraction(1, 2))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(ADD_INPUT, ADD_INPUT, M0, SHIFT), min_size=4, max_size=4), M0, SHIFT)
def test_add_requantize_per_channel_rounds_once(channels: list[tuple[int, int, int, int]], m0b: int, nb: int) -> None:
    """Input a has one multiplier per channel (a conv accumulator with per-channel weight steps), b one."""
    a = torch.tensor([c[0] for c in channels]).view(1, 4, 1, 1)
    b = torch.tensor([c[1] for c in channels]).view(1, 4, 1, 1)
    m0a, na = torch.tensor([c[2] for c in channels]), torch.tensor([c[3] for c in channels])
    got = add_requantize(a, b, [(m0a, na), (m0b, nb)]).flatten().tolist()
    swapped = add_requantize(b, a, [(m0b, nb), (m0a, na)]).flatten().tolist()
    for (x, y, m0x, nx), g, h in zip(channels, got, swapped):
        exact = Fraction(x * m0x, 2 ** (31 + nx)) + Fraction(y * m0b, 2 ** (31 + nb))
        assert g == h == math.floor(exact + Fraction(1, 2))


def test_bn_folding_matches_conv_bn() -> None:
    torch.manual_seed(0)
    mod = ConvBN(3, 8, 3, stride=2)
    with torch.no_grad():
        mod.bn.running_mean.uniform_(-1, 1)
        mod.bn.running_var.uniform_(0.2, 3)
        mod.bn.weight.uniform_(0.5, 2)
        mod.bn.bias.uniform_(-1, 1)
    mod.eval()
    x = torch.randn(2, 3, 9, 9)
    w, b = mod.folded()
    torch.testing.assert_close(F.conv2d(x, w, b, 2, 1), mod(x), rtol=1e-5, atol=1e-5)


def test_float32_mac_is_exact_near_its_bound() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (2, 64, 6, 6), generator=gen)  # 8-bit codes
    w = torch.randint(-128, 128, (5, 64, 3, 3), generator=gen)  # K*255*128 = 18.8M, near 2**24
    b = torch.randint(-(2**20), 2**20, (5,), generator=gen)
    cols = F.unfold(x.double(), 3, padding=1).long()  # (N, K, L), exact
    ref = (w.view(5, -1) @ cols).view(2, 5, 6, 6) + b.view(1, -1, 1, 1)
    assert torch.equal(mac(x, w, b, 1, 1, torch.float64), ref)
    small = (x // 16, w // 16)  # 4-bit-like codes: bound far below 2**24, float32 must be exact too
    ref_small = (small[1].view(5, -1) @ F.unfold(small[0].double(), 3, padding=1).long()).view(2, 5, 6, 6)
    assert torch.equal(mac(*small, b, 1, 1, torch.float32), ref_small + b.view(1, -1, 1, 1))


@pytest.mark.parametrize("where", ["global", "onednn_ops"])
def test_mac_stays_exact_under_reduced_precision_modes(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2000, (2, 8, 6, 6), generator=gen)  # most of these are not bfloat16 numbers
    w = torch.randint(-127, 128, (5, 8, 3, 3), generator=gen)  # K*2000*127 = 18.3M: float64 path
    b = torch.randint(-(2**20), 2**20, (5,), generator=gen)
    ref = (w.view(5, -1) @ F.unfold(x.double(), 3, padding=1).long()).view(2, 5, 6, 6) + b.view(1, -1, 1, 1)
    x_small = x // 2  # K*1000*127 = 9.1M < 2**24: the float32 path
    ref_small = (w.view(5, -1) @ F.unfold(x_small.double(), 3, padding=1).long()).view(2, 5, 6, 6)
    pooled = torch.randint(0, 255 * 64, (4, 8), generator=gen)  # sums of 8x8 codes, as the classifier reads
    fc = torch.randint(-127, 128, (10, 8), generator=gen)
    if where == "global":
        monkeypatch.setattr(torch.backends, "fp32_precision", "bf16")
    else:
        monkeypatch.setattr(torch.backends.mkldnn.conv, "fp32_precision", "bf16")
        monkeypatch.setattr(torch.backends.mkldnn.matmul, "fp32_precision", "bf16")
    assert torch.equal(mac(x, w, b, 1, 1, torch.float64), ref)
    assert torch.equal(mac(x_small, w, b, 1, 1, torch.float32), ref_small + b.view(1, -1, 1, 1))
    assert torch.equal(mac(pooled, fc, b[:1].expand(10), 0, 0, torch.float32), pooled @ fc.T + b[0])
    assert torch.backends.mkldnn.conv.fp32_precision == torch.backends.mkldnn.matmul.fp32_precision == "bf16"
    with ieee_fp32():
        assert torch.backends.mkldnn.conv.fp32_precision == torch.backends.mkldnn.matmul.fp32_precision == "ieee"
    if where == "global":  # the op switches were restored to inherit, not frozen at "bf16"
        monkeypatch.setattr(torch.backends, "fp32_precision", "tf32")
        assert torch.backends.mkldnn.conv.fp32_precision == torch.backends.mkldnn.matmul.fp32_precision == "tf32"


def _float_model(name: str, negative: bool = False) -> torch.nn.Module:
    """A float net with non-trivial BN statistics; ``negative``: every third BN scale is negative."""
    torch.manual_seed(0)
    net = build_model(name)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                if negative:
                    m.weight[::3] *= -1
                m.bias.uniform_(-0.2, 0.2)
    return net


def _qat_model(name: str, w_bits: int, a_bits: int, calib: torch.Tensor | None = None, per_channel: bool = False,
               keep_bn: bool = False, residual_bits: int | None = None, step_init: str = "lsq"):
    """A QAT net of :func:`_float_model` (negative BN scales when BN is kept: their sign moves into the
    codes), steps started by ``step_init`` and calibrated on ``calib`` (default: noise)."""
    q = to_qat(_float_model(name, negative=keep_bn), w_bits, a_bits, per_channel_weights=per_channel, keep_bn=keep_bn,
               residual_bits=residual_bits, weight_step_init=step_init, act_step_init=step_init)
    q.train()
    with torch.no_grad():
        q(torch.randn(16, 3, 32, 32) if calib is None else calib)
    return q.eval()


@pytest.mark.parametrize("name", ["resnet_cifar10", "tiny_vgg"])
@pytest.mark.parametrize("bits, per_channel, keep_bn, residual, init", [
    ((8, 8), False, False, None, "lsq"), ((4, 4), False, False, None, "lsq"), ((2, 2), False, False, None, "lsq"),
    ((3, 5), False, False, None, "lsq"), ((8, 8), True, False, None, "lsq"), ((2, 2), True, False, None, "lsq"),
    ((8, 8), False, True, None, "lsq"), ((2, 2), False, True, None, "lsq"), ((4, 4), True, True, None, "lsq"),
    ((2, 2), True, True, 8, "lsq"), ((4, 3), False, False, 6, "lsq"), ((2, 2), True, False, 8, "mse"),
    ((4, 4), True, True, None, "mse")])
def test_integer_codes_equal_fake_quant(name: str, bits: tuple[int, int], per_channel: bool, keep_bn: bool,
                                        residual: int | None, init: str) -> None:
    q = _qat_model(name, *bits, per_channel=per_channel, keep_bn=keep_bn, residual_bits=residual, step_init=init)
    blob = export_integer(q, (3, 32, 32))
    convs = [op for op in blob["ops"] if op["kind"] == "conv" and op["out"] is not None]
    # a kept BN folds into one multiplier per output channel, whatever the weight steps
    assert all(isinstance(op["out"]["m0n"][0][0], torch.Tensor) == (per_channel or keep_bn) for op in convs)
    engine = IntegerModel(blob)
    x = torch.randn(8, 3, 32, 32)
    record: dict[str, torch.Tensor] = {}
    with torch.no_grad():  # float64: float32 rounds a value near a code boundary either way, by CPU kernel
        env = copy.deepcopy(q).double().trace(x.double())
        logits = engine.run(x, record)
    assert logits.dtype == torch.int64 and all(t.dtype == torch.int64 for t in record.values())
    assert len(q.acts) >= 6
    for layer in q.acts:
        fq = (env[layer][0] / env[layer][1]).round().long()
        diff = (fq - record[layer]).abs()
        assert diff.max() <= 1, layer
        assert (diff == 0).float().mean() >= 0.999, layer
        assert record[layer].min() >= q.acts[layer].qn and record[layer].max() <= q.acts[layer].qp
    fq_codes = {layer: (env[layer][0] / env[layer][1]).round().long() for layer in q.acts}
    local: dict[str, torch.Tensor] = {}
    engine.run(x, local, feed=fq_codes)  # each layer from the fake-quant model's input codes
    for layer, codes in fq_codes.items():
        diff = (codes - local[layer]).abs()
        assert diff.max() <= 1 and (diff == 0).float().mean() >= 0.999, layer
    fq_logits = env[q.ops[-1].name][0]
    assert (fq_logits.argmax(1) == logits.argmax(1)).float().mean() >= 0.875
    torch.testing.assert_close(logits.double() * engine.logit_scale, fq_logits.double(), rtol=1e-3, atol=1e-3)


def test_step_init_rules_reach_every_quantizer_and_the_checkpoint() -> None:
    torch.manual_seed(0)
    calib = torch.randn(16, 3, 32, 32)
    lsq, mse = (_qat_model("resnet_cifar10", 2, 2, calib, per_channel=True, residual_bits=8, step_init=init)
                for init in ("lsq", "mse"))
    assert (mse.meta["weight_step_init"], mse.meta["act_step_init"]) == ("mse", "mse")
    quantizers = [n for n, m in mse.named_modules() if isinstance(m, LsqQuantizer)]
    assert len(quantizers) > 20 and all(mse.get_submodule(n).init == "mse" for n in quantizers)
    differ = [n for n in quantizers if not torch.equal(lsq.get_submodule(n).step, mse.get_submodule(n).step)]
    assert len(differ) >= len(quantizers) - 2, sorted(set(quantizers) - set(differ))
    again = model_from_checkpoint({"kind": "qat", "meta": mse.meta, "model": mse.state_dict()}).eval()
    assert again.meta["act_step_init"] == "mse"
    with torch.no_grad():
        assert torch.equal(again(calib[:2]), mse(calib[:2]))


def test_per_channel_qat_checkpoint_rebuilds_and_its_steps_differ_by_channel() -> None:
    q = _qat_model("resnet_cifar10", 2, 2, per_channel=True)
    assert q.meta["per_channel_weights"] is True
    conv = q.layers["layer1_0_conv1"].wq
    assert conv.step.shape == (16, 1, 1, 1) and conv.step.flatten().unique().numel() > 1
    assert q.layers[q.ops[-1].name].wq.step.ndim == 0  # the classifier keeps one step
    again = model_from_checkpoint({"kind": "qat", "meta": q.meta, "model": q.state_dict()}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), q(x))


def test_wider_residual_stream_is_requantized_before_every_conv_that_reads_it() -> None:
    """W2A2 with 8-bit adds: the adds keep 8 bits, every conv reading one (conv1 of the next block and
    the shortcut convs) rescales its input to 2 bits, in the fake-quant net and in the engine."""
    q = _qat_model("resnet_cifar10", 2, 2, residual_bits=8)
    adds = [op.name for op in q.ops if op.kind == "add"]
    assert all(q.acts[a].bits == 8 for a in adds) and q.meta["residual_bits"] == 8
    readers = {op.name for op in q.ops if op.kind == "conv" and op.inputs[0] in adds}
    assert readers and {n for n, layer in q.layers.items() if layer.in_q is not None} == readers
    assert all(q.layers[n].in_q.bits == 2 for n in readers)
    ops = {op["name"]: op for op in export_integer(q, (3, 32, 32))["ops"]}
    assert {n for n, op in ops.items() if op.get("in") is not None} == readers
    assert all((op["in"]["qn"], op["in"]["qp"]) == (0, 3) for n, op in ops.items() if n in readers)
    assert all(q.layers[n].in_q is None for n in q.layers if n not in readers)
    plain = _qat_model("resnet_cifar10", 2, 2)
    assert all(layer.in_q is None for layer in plain.layers.values()) and plain.acts[adds[0]].bits == 2
    again = model_from_checkpoint({"kind": "qat", "meta": q.meta, "model": q.state_dict()}).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), q(x))


@pytest.mark.parametrize("keep_bn", [False, True])
def test_init_from_a_qat_checkpoint_keeps_weights_and_same_width_steps(keep_bn: bool) -> None:
    """W4A4 -> W2A2: weights, biases and BN come over; the 8-bit first/last quantizers keep their steps;
    2-bit weight steps restart from the weights, 2-bit activation steps at calibration."""
    from triseg.lsq.train import init_from_qat

    q4 = _qat_model("resnet_cifar10", 4, 4, per_channel=True, keep_bn=keep_bn, residual_bits=8)
    ckpt = {"kind": "qat", "meta": q4.meta, "model": q4.state_dict()}
    q2 = to_qat(build_model("resnet_cifar10"), 2, 2, per_channel_weights=True, keep_bn=keep_bn, residual_bits=8)
    init_from_qat(q2, ckpt, "w4a4.pt")
    for name, layer in q2.layers.items():
        assert torch.equal(layer.weight, q4.layers[name].weight), name
        assert (layer.bn is not None) == (keep_bn and name != "fc")
        if layer.bn is not None:
            assert torch.equal(layer.bn.running_var, q4.layers[name].bn.running_var)
        else:
            assert torch.equal(layer.bias, q4.layers[name].bias)
    first, fc = q2.ops[0].name, q2.ops[-1].name
    for keep in (q2.input_q, q2.layers[first].wq, q2.layers[fc].wq, q2.acts["layer3_2_add"]):
        assert keep.bits == 8 and keep.initialized
    assert torch.equal(q2.layers[first].wq.step, q4.layers[first].wq.step)
    assert torch.equal(q2.acts["layer3_2_add"].step, q4.acts["layer3_2_add"].step)
    w = q2.layers["layer2_0_conv1"].weight
    torch.testing.assert_close(q2.layers["layer2_0_conv1"].wq.step, 2 * w.abs().flatten(1).mean(1).view(-1, 1, 1, 1))
    assert not q2.acts["layer2_0_conv1"].initialized and not q2.layers["layer2_0_conv1"].in_q.initialized
    assert q2.acts["layer1_0_add"].initialized  # an 8-bit residual quantizer keeps its step
    other = to_qat(build_model("resnet_cifar10"), 2, 2, keep_bn=not keep_bn)
    with pytest.raises(TrisegError, match="--keep-bn"):
        init_from_qat(other, ckpt, "w4a4.pt")


def test_kept_bn_trains_on_batch_statistics_and_folds_for_inference() -> None:
    """Train mode: conv + BN on batch statistics, gradients reach BN's scale and shift. Eval mode: BN's
    running statistics folded into per-channel steps (negative BN scales flip the codes' sign) give the
    float net's output up to 8-bit rounding, as the folded-BN net does; a checkpoint rebuilds it."""
    torch.manual_seed(1)
    x = torch.randn(8, 3, 32, 32)
    float_net = _float_model("tiny_vgg", negative=True).eval()
    with torch.no_grad():
        ref = float_net(x)
    kept = to_qat(_float_model("tiny_vgg", negative=True), 8, 8, keep_bn=True)
    kept.eval()
    with torch.no_grad():
        kept(x)  # calibrates the activation steps
        folded = to_qat(_float_model("tiny_vgg", negative=True), 8, 8).eval()
        folded(x)
        out, folded_out = kept(x), folded(x)
    err = ((out - ref).norm() / ref.norm()).item()
    assert err < 0.05 and err < 2 * ((folded_out - ref).norm() / ref.norm()).item() + 0.01
    layer = kept.layers["conv2_0"]
    codes, step, _ = layer.integer_view()
    assert (step > 0).all() and step.shape == (64, 1, 1, 1)
    flipped = (layer.bn.weight < 0).view(-1, 1, 1, 1)
    assert torch.equal(codes, torch.where(flipped, -1, 1) * layer.wq.codes(layer.weight))
    mean = layer.bn.running_mean.clone()
    kept.train()
    loss = kept(x).square().mean()
    loss.backward()
    assert not torch.equal(layer.bn.running_mean, mean), "train mode must use (and track) batch statistics"
    assert layer.bn.weight.grad.abs().sum() > 0 and layer.bn.bias.grad.abs().sum() > 0
    assert kept.meta["keep_bn"] is True
    again = model_from_checkpoint({"kind": "qat", "meta": kept.meta, "model": kept.state_dict()}).eval()
    with torch.no_grad():
        assert torch.equal(again(x), kept.eval()(x))


@pytest.mark.parametrize("bits", [8, 2])
def test_a_flipped_lowest_weight_code_is_exported_exactly(bits: int) -> None:
    """A negative BN scale flips a weight code Qn to -Qn = Qp + 1 (128 at 8 bits, which int8 would wrap to
    -128): the inference codes keep it, and the export stores it exactly (int16 where int8 cannot)."""
    qn, qp = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    bn = torch.nn.BatchNorm2d(2).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([-1.0, 1.0]))
    layer = QuantLayer("conv", torch.tensor([[1.0, -1.0], [1.0, -1.0]]).view(2, 1, 1, 2), None, bits,
                       per_channel=True, bn=bn).eval()
    with torch.no_grad():
        layer.wq.step.fill_(1.0 / -qn)  # the negative weights land on code Qn exactly
    codes, _, _ = layer.integer_view()
    assert codes.flatten().tolist() == [-qp, -qn, qp, qn]
    q = to_qat(_float_model("tiny_vgg", negative=True), bits, bits, per_channel_weights=True, keep_bn=True).eval()
    with torch.no_grad():
        for m in q.layers.values():
            m.wq.step.mul_(0.02)  # clip hard: many weights at Qn, flipped in the negative-BN channels
        q(torch.randn(4, 3, 32, 32))
    blob = export_integer(q, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    record: dict[str, torch.Tensor] = {}
    IntegerModel(blob).run(x, record)
    with torch.no_grad():
        env = q.trace(x)
    for op in blob["ops"]:
        if op["kind"] == "conv":
            view = q.layers[op["name"]].integer_view()[0]
            assert (view == -qn).any() and torch.equal(op["weight"].long(), view.long()), op["name"]
            assert op["weight"].dtype == (torch.int16 if view.max() == 128 else torch.int8)  # 8-bit first conv too
    for layer_name in q.acts:
        diff = (env[layer_name][0] / env[layer_name][1]).round().long() - record[layer_name]
        assert diff.abs().max() <= 1 and (diff == 0).float().mean() >= 0.999, layer_name


def test_compare_measures_the_engine_against_float32_and_float64_fake_quant() -> None:
    from triseg.lsq.infer import compare

    q = _qat_model("resnet_cifar10", 4, 4, per_channel=True)
    engine = IntegerModel(export_integer(q, (3, 32, 32)))
    gen = torch.Generator().manual_seed(3)
    data = [(torch.randn(32, 3, 32, 32, generator=gen), torch.randint(0, 10, (32,), generator=gen)) for _ in range(2)]
    r = compare(q, engine, data)
    assert r["images"] == 64 and set(r["layer_code_agreement_pct_float64"]) == set(q.acts)
    # float64 computes the model's definition: the engine matches every code and every logit of this
    # model (float32 fake-quant misses some near rounding boundaries)
    assert r["min_layer_code_agreement_pct_float64"] == r["equal_logits_pct_float64"] == 100.0
    assert r["top1_agreement_float64"] == 100.0
    assert r["min_local_layer_code_agreement_pct_float64"] >= r["min_local_layer_code_agreement_pct"]
    assert r["min_local_layer_code_agreement_pct_float64"] >= 99.99 and r["max_local_layer_code_diff_float64"] <= 1


def test_format_1_files_still_load() -> None:
    q = _qat_model("tiny_vgg", 4, 4)
    blob = export_integer(q, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(IntegerModel(dict(blob, format="triseg-lsq-int/1")).run(x), IntegerModel(blob).run(x))


def test_export_loads_without_training_code(tmp_path: Path) -> None:
    q = _qat_model("resnet_cifar10", 4, 4)
    path = tmp_path / "int_model.pt"
    export_integer(q, (3, 32, 32), path)
    x = torch.randn(4, 3, 32, 32)
    torch.save(x, tmp_path / "x.pt")
    expected = IntegerModel.load(path).run(x)
    code = (
        "import sys, torch\n"
        "from triseg.lsq.integer import IntegerModel\n"
        f"m = IntegerModel.load({str(path)!r})\n"
        f"out = m.run(torch.load({str(tmp_path / 'x.pt')!r}))\n"
        "bad = [k for k in sys.modules if k.startswith('triseg.') and k not in "
        "('triseg.errors', 'triseg.lsq', 'triseg.lsq.ops', 'triseg.lsq.integer')]\n"
        "assert not bad, bad\n"
        f"torch.save(out, {str(tmp_path / 'out.pt')!r})\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])
    assert torch.equal(torch.load(tmp_path / "out.pt"), expected)
    with pytest.raises(TrisegError, match="not found"):
        IntegerModel.load(tmp_path / "missing.pt")
    torch.save({"format": "other"}, tmp_path / "bad.pt")
    with pytest.raises(TrisegError, match="not a triseg-lsq-int"):
        IntegerModel.load(tmp_path / "bad.pt")


@pytest.mark.parametrize("edit, message", [
    (lambda b: b.update(ops=b["ops"][:1]), "gives outputs of shape"),
    (lambda b: b["ops"][1].update(inputs=["nowhere"]), "does not run (KeyError: 'nowhere')"),
    (lambda b: b["ops"][0].update(bias=torch.zeros(3, dtype=torch.long)), "does not run (RuntimeError"),
    (lambda b: b.update(input=None), "does not run (TypeError"),
    (lambda b: b.update(input_shape=(3, 32)), "input shape (3, 32) is not (channels, height, width)"),
    (lambda b: b.update(input_shape=(3, 10**6, 10**6)), "with sides in [1, 4096]"),
    (lambda b: b["meta"].update(num_classes=100), "not (100,) logits"),
    (lambda b: b.update(meta=None), "is damaged or not one (TypeError)"),
    (lambda b: b.update(logit_scale=float("nan")), "its logit_scale nan is not a positive number"),
], ids=["truncated", "dangling-input", "bias-shape", "no-input-step", "short-shape", "huge-shape", "classes",
        "meta-none", "logit-scale-nan"])
def test_an_integer_model_whose_ops_do_not_fit_is_one_line_at_load(edit, message, tmp_path: Path) -> None:
    blob = export_integer(_qat_model("resnet_cifar10", 4, 4), (3, 32, 32))
    edit(blob)
    torch.save(blob, tmp_path / "int_model.pt")
    with pytest.raises(TrisegError) as info:
        IntegerModel.load(tmp_path / "int_model.pt")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_lsq_checkpoints_load_safely_and_refuse_other_files(tmp_path: Path) -> None:
    with pytest.raises(TrisegError, match="not found"):
        load_lsq_checkpoint(tmp_path / "missing.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(TrisegError, match="list.pt is not a triseg LSQ checkpoint: pass one written by lsq-train"):
        load_lsq_checkpoint(tmp_path / "list.pt")
    torch.save({"kind": "int8", "meta": {}}, tmp_path / "other.pt")
    with pytest.raises(TrisegError, match="other.pt is not an LSQ checkpoint"):
        load_lsq_checkpoint(tmp_path / "other.pt")
    torch.save({"kind": "float", "meta": {}, "extra": Fraction(1, 3)}, tmp_path / "pickled.pt")
    with pytest.raises(TrisegError, match=r"is damaged or not a torch file \(UnpicklingError\)"):
        load_lsq_checkpoint(tmp_path / "pickled.pt")
    torch.save({"kind": "qat", "meta": {"w_bits": 4}, "model": {"w": torch.ones(2)}}, tmp_path / "ok.pt")
    assert load_lsq_checkpoint(tmp_path / "ok.pt")["meta"] == {"w_bits": 4}


def test_every_interpreter_handles_exactly_the_kinds() -> None:
    for table in (FLOAT_OPS, QAT_OPS, ENGINE_OPS, EXPORT_OPS):
        assert tuple(table) == KINDS
    with pytest.raises(TypeError, match="exactly"):
        op_table({kind: None for kind in KINDS[:-1]})


def _rename_kind(ops: list[Op], old: str, new: str) -> list[Op]:
    """``ops`` with every op of kind ``old`` turned into kind ``new``."""
    return [dataclasses.replace(op, kind=new) if op.kind == old else op for op in ops]


def test_unknown_op_kind_raises_in_float_and_qat_nets() -> None:
    net = build_model("tiny_vgg")
    q = to_qat(net, 4, 4)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        q(x)  # calibrate on the real graph
        net.ops = _rename_kind(net.ops, "avgpool", "globalpool")  # once silently run as average pooling
        q.ops = _rename_kind(q.ops, "avgpool", "globalpool")
        for model in (net, q):
            with pytest.raises(TrisegError, match="unknown op kind 'globalpool' in op 'avgpool'"):
                model(x)


def test_unknown_op_kind_raises_in_integer_engine() -> None:
    q = _qat_model("tiny_vgg", 4, 4)
    blob = export_integer(q, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    assert IntegerModel(blob).run(x).shape == (2, 10)
    pool = next(op for op in blob["ops"] if op["kind"] == "avgpool")
    pool["kind"] = "median"
    with pytest.raises(TrisegError, match=f"unknown op kind 'median' in op '{pool['name']}'"):
        IntegerModel(blob).run(x)


def test_train_qat_infer_resume_on_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--train-limit", "128", "--eval-limit", "64", "--batch-size", "32", "--log-dir", str(tmp_path / "tb")]
    fdir, qdir = tmp_path / "float", tmp_path / "qat"
    # the original spellings: --out-dir, --threads, --cuda -1
    assert main(["lsq-train", "--model", "tiny_vgg", "--epochs", "1", "--out-dir", str(fdir), "--threads", "1",
                 "--cuda", "-1", *common]) == 0
    saved = torch.load(fdir / "checkpoint.pt", weights_only=True)["config"]
    assert (saved["output_dir"], saved["workers"], saved["cuda"], saved["epochs"]) == (str(fdir), 1, -1, 1)
    assert main(["lsq-train", "--model", "tiny_vgg", "--epochs", "1", "--output-dir", str(fdir), *common]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["lsq-train", "--model", "tiny_vgg", "--epochs", "2", "--output-dir", str(fdir), "--resume",
                 "--device", "cpu", "--amp", *common]) == 0  # mixed precision may change on resume
    history = json.loads((fdir / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    events = EventAccumulator(str(tmp_path / "tb" / "float"), purge_orphaned_data=True).Reload()
    assert [e.step for e in events.Scalars("float/val_acc")] == [1, 2]  # the resume keeps epoch 1
    float_ckpt = str(fdir / "checkpoint.pt")
    assert main(["lsq-qat", "--model", "resnet18", "--epochs", "1", "--output-dir", str(qdir),
                 "--float-checkpoint", float_ckpt, *common]) == 2
    assert f"{float_ckpt} holds tiny_vgg, not --model resnet18" in capsys.readouterr().err
    assert not qdir.exists() and not (tmp_path / "tb" / "qat").exists()
    assert main(["lsq-qat", "--epochs", "1", "--output-dir", str(qdir), "--float-checkpoint", float_ckpt,
                 "--w-num-bits", "2", "--a-num-bits", "3", "--act-step-init", "mse",
                 *common]) == 0  # --model: the checkpoint's
    meta = torch.load(qdir / "checkpoint.pt", weights_only=True)["meta"]
    assert (meta["weight_step_init"], meta["act_step_init"]) == ("lsq", "mse")
    assert (qdir / "int_model.pt").is_file() and any((tmp_path / "tb" / "qat").iterdir())
    init_dir = tmp_path / "qat-init"
    assert main(["lsq-qat", "--epochs", "1", "--output-dir", str(init_dir), "--float-checkpoint", float_ckpt,
                 "--init-checkpoint", str(qdir / "checkpoint.pt"), *common]) == 2
    assert "give one of --float-checkpoint and --init-checkpoint" in capsys.readouterr().err
    assert main(["lsq-qat", "--epochs", "1", "--output-dir", str(init_dir), "--init-checkpoint", float_ckpt,
                 *common]) == 2
    assert "--init-checkpoint needs lsq-qat's" in capsys.readouterr().err
    assert main(["lsq-qat", "--epochs", "1", "--output-dir", str(init_dir), "--init-checkpoint",
                 str(qdir / "checkpoint.pt"), "--w-num-bits", "2", "--a-num-bits", "2", *common]) == 0
    assert (init_dir / "int_model.pt").is_file()
    assert main(["lsq-qat", "--epochs", "2", "--output-dir", str(init_dir), "--resume", "--w-num-bits", "2",
                 "--a-num-bits", "2", "--act-step-init", "lsq", *common]) == 2
    assert "was made with --act-step-init mse, not lsq" in capsys.readouterr().err
    assert main(["lsq-qat", "--epochs", "2", "--output-dir", str(init_dir), "--resume", "--w-num-bits", "2",
                 "--a-num-bits", "2", *common]) == 0  # the start model is not needed to resume
    bn_dir = tmp_path / "qat-bn"
    assert main(["lsq-qat", "--epochs", "1", "--output-dir", str(bn_dir), "--float-checkpoint", float_ckpt,
                 "--w-num-bits", "2", "--a-num-bits", "2", "--keep-bn", "--lr", "0.01", *common]) == 0
    assert torch.load(bn_dir / "checkpoint.pt", weights_only=True)["meta"]["keep_bn"] is True
    assert main(["lsq-qat", "--epochs", "2", "--output-dir", str(bn_dir), "--resume", "--w-num-bits", "2",
                 "--a-num-bits", "2", "--lr", "0.01", *common]) == 2
    assert "was made with --keep-bn True, not False" in capsys.readouterr().err
    report = tmp_path / "report.json"
    assert main(["lsq-infer", "--checkpoint", str(qdir / "checkpoint.pt"), "--eval-limit", "64",
                 "--json", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["images"] == 64 and r["model"] == "tiny_vgg" and r["w_bits"] == 2 and r["a_bits"] == 3
    assert r["top1_agreement"] >= 98.0 and r["max_layer_code_diff"] <= 1
    assert main(["lsq-infer", "--int-model", str(qdir / "int_model.pt"), "--eval-limit", "64",
                 "--json", str(report)]) == 0
    assert json.loads(report.read_text())["integer_top1"] == pytest.approx(r["integer_top1"])


def test_distillation_mixes_cross_entropy_and_kd_and_leaves_the_teacher_untouched() -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Linear(6, 4)
    x, y = torch.randn(8, 6), torch.randint(0, 4, (8,))
    logits = torch.randn(8, 4, requires_grad=True)
    t = teacher(x).detach()
    for weight, T in ((0.0, 1.0), (1.0, 3.0), (0.3, 2.0)):
        got = Distillation(teacher, T, weight).loss(logits, x, y)
        p_t = F.softmax(t / T, 1)
        kl = (p_t * (p_t.log() - F.log_softmax(logits / T, 1))).sum(1).mean() * T * T
        assert got.item() == pytest.approx(((1 - weight) * F.cross_entropy(logits, y) + weight * kl).item(), rel=1e-5)
    got.backward()
    assert logits.grad is not None and teacher.weight.grad is None


@pytest.fixture(scope="module")
def tiny_vgg_float(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny_vgg float checkpoint (one epoch on 128 sample images) that the QAT tests below start from."""
    root = tmp_path_factory.mktemp("tiny_vgg_float")
    assert main(["lsq-train", "--model", "tiny_vgg", "--epochs", "1", "--output-dir", str(root / "f"),
                 "--train-limit", "128", "--eval-limit", "32", "--batch-size", "32", "--log-dir", str(root / "tb"),
                 "--workers", "1"]) == 0
    return root / "f" / "checkpoint.pt"


def test_lsq_qat_distils_from_a_float_teacher(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               tiny_vgg_float: Path) -> None:
    common = ["--train-limit", "128", "--eval-limit", "32", "--batch-size", "32", "--log-dir", str(tmp_path / "tb"),
              "--workers", "1"]
    float_ckpt = str(tiny_vgg_float)
    qat = ["lsq-qat", "--epochs", "1", "--float-checkpoint", float_ckpt, "--w-num-bits", "2", "--a-num-bits", "2",
           *common]

    def weights(run: str, *extra: str) -> list[torch.Tensor]:
        assert main([*qat, "--output-dir", str(tmp_path / run), *extra]) == 0
        return list(torch.load(tmp_path / run / "checkpoint.pt", weights_only=True)["model"].values())

    plain = weights("plain")
    same = weights("kd0", "--teacher", float_ckpt, "--kd-weight", "0")  # a teacher of weight 0 changes nothing
    distilled = weights("kd", "--teacher", float_ckpt, "--kd-T", "2")
    assert all(torch.equal(a, b) for a, b in zip(plain, same))
    assert not all(torch.equal(a, b) for a, b in zip(plain, distilled))
    capsys.readouterr()
    assert main([*qat, "--output-dir", str(tmp_path / "bad"), "--teacher", str(tmp_path / "kd/checkpoint.pt")]) == 2
    assert "distillation needs a float one" in capsys.readouterr().err
    assert main([*qat, "--output-dir", str(tmp_path / "bad"), "--teacher", str(ZOO_FLOAT)]) == 2
    assert ("holds resnet_cifar10 (10 classes, CIFAR stem); the QAT run trains tiny_vgg (10 classes, CIFAR stem)"
            in capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


def test_lsq_train_label_smoothing_changes_the_training_and_binds_a_resumed_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["lsq-train", "--model", "tiny_vgg", "--train-limit", "128", "--eval-limit", "32", "--batch-size", "32",
              "--log-dir", str(tmp_path / "tb"), "--workers", "1"]

    def run(name: str, *extra: str) -> dict:
        assert main([*common, "--epochs", "1", "--output-dir", str(tmp_path / name), *extra]) == 0
        return torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)

    plain, again, smoothed = run("plain"), run("again", "--label-smoothing", "0"), run("ls", "--label-smoothing", "0.3")
    assert plain["history"][0]["train_loss"] == again["history"][0]["train_loss"]
    assert plain["history"][0]["train_loss"] != smoothed["history"][0]["train_loss"]
    assert not all(torch.equal(a, b) for a, b in zip(plain["model"].values(), smoothed["model"].values()))
    capsys.readouterr()
    assert main([*common, "--epochs", "2", "--output-dir", str(tmp_path / "ls"), "--resume"]) == 2
    assert "was made with --label-smoothing 0.3, not 0.0" in capsys.readouterr().err


def test_a_step_through_zero_is_reflected_without_changing_the_fake_quant_values() -> None:
    q = LsqQuantizer(4, signed=True, per_sample=False, per_channel=True)
    w = torch.linspace(-0.3, 0.3, 24).view(3, 8)
    q(w)
    s = q.step.detach().flatten().clone()
    with torch.no_grad():
        q.step[1], q.step[2] = -s[1], 0.0
    before = q(w)
    keep_steps_positive(torch.nn.Sequential(q))
    assert torch.equal(q.step.detach().flatten(), torch.tensor([s[0], s[1], MIN_STEP]))
    assert torch.equal(q(w)[:2], before[:2])  # row 1's codes stay inside [-7, 7], where -s and s agree


def test_training_keeps_every_step_positive_so_the_model_exports(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 tiny_vgg_float: Path) -> None:
    """At lr 3 SGD carries a step of this W2A2 tiny_vgg through zero within two epochs (measured: an
    activation step); without the reflection after each update the export then fails."""
    import triseg.lsq.train as lsq_train

    common = ["--train-limit", "128", "--eval-limit", "32", "--batch-size", "32", "--log-dir", str(tmp_path / "tb")]
    qat = ["lsq-qat", "--epochs", "2", "--float-checkpoint", str(tiny_vgg_float), "--w-num-bits", "2",
           "--a-num-bits", "2", "--per-channel-weights", "--lr", "3", *common]
    assert main([*qat, "--output-dir", str(tmp_path / "q")]) == 0
    steps = [v for k, v in torch.load(tmp_path / "q/checkpoint.pt", weights_only=True)["model"].items()
             if k.endswith("step")]
    assert all((s >= MIN_STEP).all() for s in steps)
    monkeypatch.setattr(lsq_train, "keep_steps_positive", lambda model: None)
    capsys.readouterr()
    assert main([*qat, "--output-dir", str(tmp_path / "unguarded")]) == 2
    assert "requantization multiplier -" in capsys.readouterr().err


def test_imagenet_folder_uses_the_imagenet_stem(tmp_path: Path) -> None:
    from PIL import Image

    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / "in" / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (40, 30), (i * 90, 40, 200)).save(tmp_path / "in" / split / cls / f"{i}.png")
    out = tmp_path / "run"
    assert main(["lsq-train", "--dataset", "imagenet", "--data-dir", str(tmp_path / "in"), "--model", "tiny_vgg",
                 "--epochs", "1", "--batch-size", "2", "--loader-workers", "0", "--output-dir", str(out),
                 "--log-dir", str(tmp_path / "tb")]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_classes"] == 2 and metrics["small_input"] is False and metrics["sizes"]["val"] == 4
    assert main(["lsq-train", "--dataset", "imagenet", "--data-dir", str(tmp_path), "--epochs", "1",
                 "--output-dir", str(tmp_path / "x")]) == 2


REAL_CIFAR = Path(__file__).parents[1].parent / "shared/data/cifar10-jpg.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not REAL_CIFAR.exists(), reason=f"real CIFAR-10 archive not found at {REAL_CIFAR}")
def test_integer_engine_agrees_on_real_cifar_images() -> None:
    from triseg.data import batches, load_cifar10
    from triseg.lsq.infer import compare

    test = load_cifar10(REAL_CIFAR, val_size=0).test
    x, _ = next(iter(batches(test.take(64), 64)))
    q = _qat_model("resnet_cifar10", 3, 3, calib=x)
    engine = IntegerModel(export_integer(q, (3, 32, 32)))
    r = compare(q, engine, batches(test.take(256), 128))
    assert r["images"] == 256
    assert r["min_layer_code_agreement_pct"] >= 99.9 and r["max_layer_code_diff"] <= 1
    assert r["min_local_layer_code_agreement_pct"] >= 99.9 and r["max_local_layer_code_diff"] <= 1
    assert r["top1_agreement"] >= 99.5
