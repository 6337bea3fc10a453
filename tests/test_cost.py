"""The hardware cost model: hand-counted MACs on a two-layer model, both paths agree, identity maps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from triseg import quant
from triseg.approx.config import LayerCodes
from triseg.approx.intsim import simulate
from triseg.errors import TrisegError
from triseg.hardware.cost import CostRecorder, _codes, as_dict, count, hardware_report
from triseg.hardware.energy import DEFAULT_TABLE, energy_pj, load_table
from triseg.models.base import TapModel
from triseg.recorder import attach

MAP = LayerCodes(t1=2, v1=4, t2=6, v2=8, tmax=10)


class TwoLayers(TapModel):
    """A quantized input -> tap ``a`` -> 3x3 conv (1 -> 2 channels, padding 1) -> linear (32 -> 3)."""

    TAP_MODULES = {"a": "pre"}
    ATTENTION_LAYERS = ()

    def __init__(self) -> None:
        super().__init__()
        self.pre = nn.Identity()
        self.conv = quant.nnq.Conv2d(1, 2, 3, padding=1)
        self.fc = quant.nnq.Linear(32, 3)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        x = self.tap("a", self.pre(q))
        return self.fc(torch.flatten(self.conv(x), 1))


def quantized(codes: list[int]) -> torch.Tensor:
    return torch.quantize_per_tensor(torch.tensor(codes, dtype=torch.float32).view(1, 1, 4, 4) * 0.5, 0.5, 0,
                                     torch.quint8)



def run_counts(model: TapModel, q: torch.Tensor, config: dict) -> dict:
    recorder = CostRecorder(model, config)
    attach(model, recorder)
    with torch.no_grad():
        model(q)
    recorder.close()
    attach(model, None)
    recorder.counts.images = 1
    return as_dict(recorder.counts)


def test_hand_counted_macs_of_a_two_layer_model() -> None:
    torch.backends.quantized.engine = "x86"
    model = TwoLayers().eval()
    q = quantized(list(range(16)))  # codes 0..15 in a 4x4 image
    student = run_counts(model, q, {"a": MAP})
    conv = student["layers"]["conv"]
    # 16 outputs x 2 channels x 9 taps = 288 MACs; 44 padded reads per output channel are zeros.
    # After the map, codes 0, 1, 2 -> 0 (reads: corner 4 + edge 6 + edge 6 = 16 per channel),
    # v1 = 4 at (0,3), (1,0), (1,1), (1,2): 4 + 6 + 9 + 9 = 28, v2 = 8 at (1,3), (2,0), (2,1), (2,2): 30.
    assert (conv["macs"], conv["skipped"], conv["selected"], conv["multiplied"]) == (288, 120, 116, 52)
    assert conv["source"] == "a" and conv["weights"] == 18
    fc = student["layers"]["fc"]
    assert fc["macs"] == 96 and fc["selected"] == 0 and fc["source"] is None and fc["weights"] == 96
    assert student["tap_elements"] == {"a": 16}
    teacher = run_counts(model, q, {})["layers"]["conv"]
    assert (teacher["skipped"], teacher["selected"], teacher["multiplied"]) == (88 + 8, 0, 288 - 96)


def test_maps_that_change_nothing_give_the_teachers_counts() -> None:
    torch.backends.quantized.engine = "x86"
    model = TwoLayers().eval()
    q = quantized([0, 11, 12, 0, 13, 14, 15, 0, 20, 0, 0, 30, 40, 11, 0, 12])  # no code in (0, tmax]
    student, teacher = run_counts(model, q, {"a": MAP}), run_counts(model, q, {})
    for name in ("conv", "fc"):
        s, t = student["layers"][name], teacher["layers"][name]
        assert (s["macs"], s["skipped"], s["selected"], s["multiplied"]) == \
            (t["macs"], t["skipped"], t["selected"], t["multiplied"])


def test_int8_and_simulation_count_the_same(lenet_int8, sample) -> None:
    int8, _, _ = lenet_int8
    config = {"conv1": LayerCodes(3, 6, 10, 16, 25), "conv2": LayerCodes(4, 8, 12, 20, 30),
              "fc1": LayerCodes(2, 5, 9, 15, 24), "fc2": LayerCodes(3, 7, 12, 20, 28)}
    split = sample.test.take(64)
    a, b = as_dict(count(int8, config, split, 32)), as_dict(count(simulate(int8), config, split, 32))
    assert a == b
    assert a["layers"]["conv1.0"]["source"] is None and a["layers"]["conv2.0"]["source"] == "conv1"
    assert a["layers"]["conv1.0"]["selected"] == 0 and a["layers"]["conv2.0"]["selected"] > 0



@pytest.mark.parametrize("name", ["mobilenetv1", "nin"])
def test_depthwise_and_pooled_inputs_count_the_same(name, calibrated_int8, sample, one_thread) -> None:
    """MobileNetV1's fc reads global-average-pooled codes, which land on exact half codes; the INT8
    kernels round them half to even, and so must the simulation's count of its consumers' operands."""
    int8 = calibrated_int8[name]
    config = {layer: LayerCodes(2, 4, 7, 9, 12) for layer in int8.layers()}
    split = sample.test.take(16)
    for cfg in ({}, config):
        assert as_dict(count(int8, cfg, split, 16)) == as_dict(count(simulate(int8), cfg, split, 16))


def test_simulated_operands_round_exact_half_codes_to_even() -> None:
    """Pooled means of codes that land on x.5 (float32, a scale that is not a power of two): the kernels
    round half to even, so a mean of 0.5 is a zero operand (skipped), not a code 1 (multiplied)."""
    scale = 0.283863
    means = (torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 1.0, 2.0]]) * scale).mean(1)
    codes, s_in = _codes(SimpleNamespace(s_in=scale), means)
    assert codes.tolist() == [0, 0, 1] and s_in == scale

def test_report_totals_and_energy(lenet_int8, sample) -> None:
    int8, _, _ = lenet_int8
    config = {"conv2": LayerCodes(4, 8, 12, 20, 30)}
    report = hardware_report(int8, config, sample.test.take(32), "test").to_json()
    t = report["totals"]
    assert report["split"] == "test" and report["images"] == 32
    assert 0 < t["multiplies_left_vs_dense_int8"] < t["multiplies_left_vs_zero_skipping_int8"] < 1
    assert t["multiplies_per_image"] + t["selects_per_image"] + t["skips_per_image"] == pytest.approx(
        t["macs_per_image"])
    expected = energy_pj(DEFAULT_TABLE, t["multiplies_per_image"], t["selects_per_image"],
                         t["comparisons_per_image"])
    assert t["energy_estimate_pj_per_image"]["student"] == pytest.approx(expected)
    assert report["layers"]["classifier.fc1.0"]["source"] == "conv2"


def test_cost_table_overrides_and_one_line_errors(tmp_path) -> None:
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"mult8": 1.0}))
    table = load_table(path)
    assert table["mult8"] == 1.0 and table["add32"] == DEFAULT_TABLE["add32"] and str(path) in table["source"]
    for bad, msg in (({"mult8": -1}, "finite number >= 0"), ({"mul8": 1}, "unknown keys"), ([1], "JSON object")):
        path.write_text(json.dumps(bad))
        with pytest.raises(TrisegError, match=msg):
            load_table(path)
    with pytest.raises(TrisegError, match="not found"):
        load_table(tmp_path / "none.json")


def test_multiplied_per_block_counts_each_block_with_its_map_and_never_wraps_uint8() -> None:
    from triseg.hardware.cost import multiplied_per_block

    geo = tuple(sorted({"kind": "linear", "weight_shape": (3, 4), "stride": None, "padding": None,
                        "dilation": None, "groups": 1}.items()))
    q = torch.tensor([[200, 205, 210, 44], [200, 205, 210, 44]], dtype=torch.uint8)  # codes 0, 5, 10, -156
    x = torch._make_per_tensor_quantized_tensor(q, 0.1, 200)
    near = LayerCodes(2, 5, 7, 10, 12)   # v1 = 5, v2 = 10: one operand a row left to multiply (code -156)
    wrap = LayerCodes(2, 5, 7, 100, 120)  # 200 + 100 = 300 wraps to 44 in uint8: must not match code -156
    assert multiplied_per_block(None, x, geo, [near, wrap]) == [3 * 1, 3 * 2]
    assert multiplied_per_block(None, x, geo, [None]) == [3 * 3 * 2]
