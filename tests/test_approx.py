"""The tri-segment map: LUT semantics, legality rules, JSON, both execution paths, KD/AT, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from triseg.approx.calibrate import LayerHistogram, percentile, state_features, tmax_rule
from triseg.approx.config import LayerCodes, TrisegConfig, load_config, validate
from triseg.approx.intsim import simulate
from triseg.approx.losses import at_loss, attention_map, kd_loss
from triseg.approx.lut import LutEdit, map_codes, quint8_table
from triseg.approx.student import evaluate_student, install
from triseg.data import batches
from triseg.errors import TrisegError
from triseg.recorder import attach

C = LayerCodes(t1=3, v1=6, t2=9, v2=12, tmax=14)


def test_map_at_every_segment_boundary():
    codes = torch.tensor([-5, -1, 0, 1, 3, 4, 8, 9, 10, 13, 14, 15, 200])
    expect = [-5, -1, 0, 0, 0, 6, 6, 6, 12, 12, 12, 15, 200]
    assert map_codes(codes, C).tolist() == expect


def test_quint8_table_respects_zero_point_and_covers_all_codes():
    table = quint8_table(C, zero_point=5)
    assert table.shape == (256,) and table.dtype == torch.uint8
    assert table[5] == 5 and table[5 + 3] == 5 and table[5 + 4] == 5 + 6 and table[5 + 14] == 5 + 12
    assert table[5 + 15] == 5 + 15 and table[255] == 255 and table[0] == 0


def test_int8_and_float_paths_of_the_edit_agree():
    vals = torch.arange(0, 40, dtype=torch.float32) * 0.25
    q = torch.quantize_per_tensor(vals, 0.25, 0, torch.quint8)
    edit = LutEdit(C)
    int8 = edit(q, 0.25, 0)
    flt = edit(vals, 0.25, 0)
    assert int8.is_quantized and int8.q_scale() == 0.25
    assert torch.equal(int8.dequantize(), flt)
    assert torch.equal((flt / 0.25).round(), map_codes(torch.arange(40), C).float())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_int8_path_keeps_the_layout_and_maps_every_element(layout):
    gen = torch.Generator().manual_seed(0)
    vals = torch.randint(0, 60, (2, 3, 4, 5), generator=gen).float() * 0.5
    q = torch.quantize_per_tensor(vals, 0.5, 3, torch.quint8)
    if layout == "channels_last":
        q = q.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        q = q[:, :, ::2]
    out = LutEdit(C).int8_path(q, 0.5, 3)
    assert out.shape == q.shape and out.q_zero_point() == 3
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert torch.equal(out.int_repr().long() - 3, map_codes(q.int_repr().long() - 3, C))


@pytest.mark.parametrize("codes,rule", [
    (LayerCodes(3, 6, 9, 12, 140), "tmax 140 must be <= 127"),
    (LayerCodes(3, 6, 9, 12, 9), "tmax 9 must be >= 10"),
    (LayerCodes(1, 6, 9, 12, 14), "t1 1 must be in"),
    (LayerCodes(11, 16, 20, 30, 40), "t1 11 must be in"),
    (LayerCodes(7, 9, 10, 12, 14), "t1 7 must be in"),
    (LayerCodes(3, 5, 6, 12, 14), "t2 6 must be in"),
    (LayerCodes(3, 5, 11, 12, 14), "t2 11 must be in"),
    (LayerCodes(3, 3, 9, 12, 14), "v1 3 must be in"),
    (LayerCodes(3, 9, 9, 12, 14), "v1 9 must be in"),
    (LayerCodes(3, 6, 9, 9, 14), "v2 9 must be in"),
    (LayerCodes(3, 6, 9, 15, 14), "v2 15 must be in"),
])
def test_every_rule_is_checked_and_named(codes, rule):
    with pytest.raises(TrisegError) as err:
        validate("conv7", codes, top_code=127)
    assert "layer conv7" in str(err.value) and rule in str(err.value)
    validate("conv7", C, top_code=127)


def test_json_round_trip_and_windows_path(tmp_path):
    cfg = TrisegConfig("lenet5", "fbgemm", {"conv1": C, "fc1": LayerCodes(2, 5, 8, 20, 30)},
                       {"selection": "constrained-best", "metrics": {"acc_drop": 1.0}})
    obj = cfg.to_json()
    assert obj["layers"]["conv1"] == {"t1_code": 3, "v1_code": 6, "t2_code": 9, "v2_code": 12, "tmax_code": 14}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.json").write_text(json.dumps(obj))
    back = load_config(str(tmp_path / "sub" / "r.json"))
    assert back == cfg
    import os

    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert load_config(".\\sub\\r.json") == cfg
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("bad,msg", [
    ({"layers": {"conv1": {"t1_code": 3}}, "model": "m", "backend": "fbgemm"}, "needs integer keys"),
    ({"layers": {"conv1": {**C.to_json(), "v1_code": 6.5}}, "model": "m", "backend": "fbgemm"}, "must be integers"),
    ({"model": "m", "backend": "fbgemm"}, "not a triseg config"),
])
def test_malformed_configs_give_one_line_errors(tmp_path, bad, msg):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(TrisegError, match=msg):
        load_config(str(p))


def test_unknown_layer_is_rejected():
    cfg = TrisegConfig("lenet5", "fbgemm", {"conv9": C}, {})
    with pytest.raises(TrisegError, match="conv9"):
        cfg.validate(["conv1", "conv2"], 127)


def test_kd_against_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.5, 2.5, 0.0]])
    T = 2.0
    ps, pt = np.exp(s.numpy() / T), np.exp(t.numpy() / T)
    ps, pt = ps / ps.sum(), pt / pt.sum()
    hand = float((pt * (np.log(pt) - np.log(ps))).sum() * T * T)
    assert kd_loss(s, t, T).item() == pytest.approx(hand, rel=1e-5)
    assert kd_loss(t, t, T).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_transfer_against_hand_computation():
    fs = torch.tensor([[[[1.0, 0.0]], [[1.0, 2.0]]]])  # (1, 2 channels, 1, 2)
    ft = torch.tensor([[[[0.0, 1.0]], [[1.0, 1.0]]]])
    a_s = np.array([1 + 1, 0 + 4], dtype=float)
    a_t = np.array([0 + 1, 1 + 1], dtype=float)
    a_s, a_t = a_s / np.linalg.norm(a_s), a_t / np.linalg.norm(a_t)
    hand = float(((a_s - a_t) ** 2).mean())
    assert at_loss([attention_map(fs)], [attention_map(ft)]).item() == pytest.approx(hand, rel=1e-5)
    fc = torch.tensor([[3.0, 4.0]])
    assert torch.allclose(attention_map(fc), torch.tensor([[0.6, 0.8]]))


def test_percentile_and_tmax_rule_match_numpy():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 90, 5000)
    counts = torch.bincount(torch.from_numpy(codes), minlength=256)
    nonzero = codes[codes > 0]
    for q in (10, 50, 90, 99, 99.9):
        assert percentile(counts * (torch.arange(256) > 0), q) == int(np.percentile(nonzero, q, method="inverted_cdf"))
    hist = LayerHistogram(counts)
    assert tmax_rule(hist, 127) == int(np.percentile(nonzero, 90, method="inverted_cdf")) + 10
    assert tmax_rule(hist, 127, 75, 2) == int(np.percentile(nonzero, 75, method="inverted_cdf")) + 2
    assert tmax_rule(LayerHistogram(torch.bincount(torch.tensor([200] * 10), minlength=256)), 127) == 127
    f = state_features(hist, 1, 4)
    assert f[0] == 0.5 and f[1] == pytest.approx(nonzero.mean() / 255, rel=1e-6)
    assert f[2] == pytest.approx(nonzero.std() / 128, rel=1e-6)


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


def test_student_coverage_counts(lenet_int8, sample):
    int8, _, _ = lenet_int8
    teacher = evaluate_student(int8, {}, sample.test)
    student = evaluate_student(int8, NONTRIVIAL, sample.test)
    assert teacher.coverage == {} and 0 <= student.accuracy <= 100
    for layer, cov in student.coverage.items():
        assert 0 < cov["zeroed_share"] <= cov["changed_share"] <= cov["mapped_share"] <= 1, layer
    assert student.predictions.shape == (len(sample.test),)
    assert F.one_hot(student.predictions, 10).sum() == len(sample.test)
