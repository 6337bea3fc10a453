"""The integer simulation reproduces the INT8 kernels' codes exactly."""

from __future__ import annotations

import torch

from triseg import artifacts, quant
from triseg.approx.config import LayerCodes
from triseg.approx.intsim import simulate
from triseg.approx.student import install
from triseg.data import batches
from triseg.models import build_model
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


def _codes_agree(int8: torch.nn.Module, x: torch.Tensor, config: dict) -> None:
    """Every tap's codes and the predictions of the INT8 model and its simulation are equal under ``config``."""
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


def test_resnet20_residual_adds_are_simulated_exactly(sample) -> None:
    """On fbgemm's kernels. (oneDNN behind the x86 engine rounds some requantizations differently on
    AVX-512 machines; docs/design.md gives the measured shares.)"""
    int8, _ = artifacts.load_int8(artifacts.ZOO_DIR, "resnet20", engine="fbgemm")
    config = {layer: LayerCodes(3, 6, 10, 16, 25) for layer in int8.layers()}
    x, _ = next(batches(sample.test, 64))
    _codes_agree(int8, x, config)


def test_grouped_depthwise_convs_are_simulated_exactly(sample) -> None:
    torch.manual_seed(0)
    model = artifacts.prepare_for_qat(build_model("mobilenetv1"), "fbgemm")
    with torch.no_grad():
        for x, _ in batches(sample.train, 64):
            model(x)
    int8 = quant.convert(model.eval(), "x86")
    assert any(getattr(m, "groups", 1) > 1 for m in int8.modules()), "MobileNetV1 must keep grouped convs"
    config = {layer: LayerCodes(2, 4, 7, 9, 12) for layer in int8.layers()}
    x, _ = next(batches(sample.test, 32))
    _codes_agree(int8, x, config)
