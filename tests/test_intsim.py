"""The integer simulation reproduces the INT8 kernels' codes exactly."""

from __future__ import annotations

import pytest
import torch

from triseg import artifacts
from triseg.approx.config import LayerCodes
from triseg.approx.intsim import grid_codes, simulate
from triseg.approx.student import install
from triseg.data import batches
from triseg.recorder import attach

NONTRIVIAL = {"conv1": LayerCodes(3, 6, 10, 16, 25), "conv2": LayerCodes(4, 8, 12, 20, 30),
              "fc1": LayerCodes(2, 5, 9, 15, 24), "fc2": LayerCodes(3, 7, 12, 20, 28)}


def test_int8_path_equals_integer_simulation_under_a_config(lenet_int8, sample):
    int8, _, _ = lenet_int8
    sim = simulate(int8)
    x, _ = next(batches(sample.test, 120))
    taps = [int8.tap_name(layer) for layer in int8.layers()]
    rec_int8 = install(int8, NONTRIVIAL, keep=None)
    rec_sim = install(sim, NONTRIVIAL, keep=None)
    with torch.no_grad():
        out_int8, out_sim = int8(x), sim(x)
    attach(int8, None)
    for tap in taps:
        assert torch.equal(rec_int8.records[tap].codes, rec_sim.records[tap].codes), tap
    assert torch.equal(out_int8.argmax(1), out_sim.argmax(1))
    assert torch.allclose(out_int8, out_sim)


def _codes_agree(int8: torch.nn.Module, x: torch.Tensor, config: dict) -> torch.Tensor:
    """Every tap's codes, the logits and the predictions of the INT8 model and its simulation are equal
    under ``config``; returns the INT8 logits."""
    sim = simulate(int8)
    taps = [int8.tap_name(layer) for layer in int8.layers()]
    rec_int8 = install(int8, config, keep=None)
    rec_sim = install(sim, config, keep=None)
    with torch.no_grad():
        out_int8, out_sim = int8(x), sim(x)
    attach(int8, None)
    attach(sim, None)
    for tap in taps:
        a, b = rec_int8.records[tap].codes, rec_sim.records[tap].codes
        assert torch.equal(a, b), f"{tap}: {(a != b).float().mean().item():.4%} of codes differ"
    assert torch.equal(out_int8.argmax(1), out_sim.argmax(1))
    assert torch.equal(out_int8, out_sim)
    return out_int8


def test_resnet20_residual_adds_are_simulated_exactly(sample) -> None:
    """On fbgemm's kernels. (oneDNN behind the x86 engine rounds some requantizations differently on
    AVX-512 machines; docs/design.md gives the measured shares.)"""
    int8, _ = artifacts.load_int8(artifacts.ZOO_DIR, "resnet20", engine="fbgemm")
    config = {layer: LayerCodes(3, 6, 10, 16, 25) for layer in int8.layers()}
    x, _ = next(batches(sample.test, 64))
    _codes_agree(int8, x, config)


@pytest.mark.parametrize("name", ["mobilenetv1", "nin"])
def test_depthwise_and_pooled_models_are_simulated_exactly(name, calibrated_int8, sample, one_thread) -> None:
    """Codes at every tap and the logits, with and without a tri-segment config. The global average
    pools (MobileNetV1 before fc, NiN after its head) produce exact half codes, which the INT8 kernels
    round half to even; the simulation used to round them by float error (MobileNetV1: 0.5 % of fc
    inputs) and left NiN's pooled logits off the grid (12 of 64 predictions of this untrained NiN differed)."""
    int8 = calibrated_int8[name]
    if name == "mobilenetv1":
        assert all(m.groups == m.in_channels for n, m in int8.named_modules() if n.endswith(".dw.0")), \
            "MobileNetV1 must keep its depthwise convs"
    x, _ = next(batches(sample.test, 16))
    teacher = _codes_agree(int8, x, {})
    student = _codes_agree(int8, x, {layer: LayerCodes(2, 4, 7, 9, 12) for layer in int8.layers()})
    assert not torch.equal(teacher, student), "the config must change the logits"


@pytest.mark.parametrize("name", ["mobilenetv1", "nin"])
def test_the_shipped_teachers_are_simulated_exactly(name, sample, one_thread) -> None:
    """The trained zoo teachers (MobileNetV1's depthwise convs, NiN's pooled head), whose code distributions an
    untrained model does not have: codes at every tap and the logits, as the teacher and under a config that
    maps every layer."""
    int8, _ = artifacts.load_int8(artifacts.ZOO_DIR, name, engine="fbgemm")
    x, _ = next(batches(sample.test, 32))
    teacher = _codes_agree(int8, x, {})
    student = _codes_agree(int8, x, {layer: LayerCodes(3, 6, 10, 16, 25) for layer in int8.layers()})
    assert not torch.equal(teacher, student), "the config must change the logits"


def test_grid_codes_round_exact_half_codes_to_even() -> None:
    """Means of 2x2 codes in float32 with a scale that is not a power of two: ties go to the even code."""
    scale = 0.0362683609
    codes = torch.tensor([[1.0, 2.0, 2.0, 2.0], [1.0, 2.0, 3.0, 4.0], [3.0, 4.0, 4.0, 4.0], [5.0, 6.0, 6.0, 6.0]])
    mean = (codes.float() * scale).mean(1)
    assert grid_codes(mean, scale).tolist() == [2.0, 2.0, 4.0, 6.0]
