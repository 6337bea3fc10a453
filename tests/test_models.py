"""Models, tap names, the recorder, and the fuse -> QAT -> convert round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from triseg import artifacts, quant
from triseg.models import MODELS, build_model
from triseg.recorder import EditOnlyRecorder, Recorder, attach
from triseg.train import TrainConfig, fit, predictions

EXPECTED_TAPS = {
    "lenet5": ["block_output.conv1", "block_output.conv2", "classifier.fc1.out", "classifier.fc2.out"],
    "alexnet": [f"block_output.conv{i}" for i in range(1, 6)] + ["classifier.fc1.out", "classifier.fc2.out"],
    "vgg16": [f"block_output.conv{s}_{i}" for s, n in zip(range(1, 6), (2, 2, 3, 3, 3)) for i in range(1, n + 1)],
}


@pytest.mark.parametrize("name", list(MODELS))
def test_every_model_builds_and_records_every_tap(name):
    model = build_model(name).eval()
    rec = attach(model, Recorder())
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert list(rec.records) == [model.tap_name(layer) for layer in model.layers()]
    assert set(model.ATTENTION_LAYERS) <= set(model.layers())


@pytest.mark.parametrize("name", list(EXPECTED_TAPS))
def test_tap_names_follow_the_original_tool(name):
    cls = MODELS[name]
    assert [cls.tap_name(layer) for layer in cls.layers()] == EXPECTED_TAPS[name]


def test_alexnet_is_cifar_sized():
    params = sum(p.numel() for p in build_model("alexnet").parameters())
    assert 2.5e6 < params < 3.5e6


def test_fuse_qat_convert_round_trip(sample, tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet5")
    fit(model, sample, TrainConfig(epochs=1, batch_size=32, max_train_batches=4), tmp_path / "f.ckpt", tmp_path / "tb")
    qat = artifacts.prepare_for_qat(copy.deepcopy(model), "fbgemm")
    assert any("FakeQuantize" in type(m).__name__ for m in qat.modules())
    fit(qat, sample, TrainConfig(epochs=1, batch_size=32, lr=1e-3, channels_last=False, max_train_batches=4),
        tmp_path / "q.ckpt", tmp_path / "tb")
    int8 = quant.convert(qat.eval(), "fbgemm")
    rec = attach(int8, Recorder())
    p_int8 = predictions(int8, sample.test.take(64))
    p_qat = predictions(qat, sample.test.take(64))
    assert (p_int8 == p_qat).float().mean() >= 0.9
    recorded = rec.records["block_output.conv1"]
    assert recorded.raw.is_quantized and recorded.codes.min() == 0 and recorded.codes.max() > 0  # after ReLU
    assert torch.allclose(recorded.values, recorded.codes.float() * recorded.scale)


def test_int8_matches_qat_on_a_batch(lenet_int8, sample):
    int8, qat, _ = lenet_int8
    split = sample.test
    agree = (predictions(int8, split) == predictions(qat, split)).float().mean().item()
    assert agree >= 0.95


def test_recorder_codes_on_fake_quant_model_and_edit(lenet_int8, sample):
    _, qat, _ = lenet_int8
    x = torch.stack([sample.test.x[i] for i in range(8)]).float()
    rec = attach(qat, Recorder())
    with torch.no_grad():
        qat((x / 255 - 0.5) / 0.25)
    r = rec.records["block_output.conv2"]
    assert r.codes is not None and torch.allclose(r.codes.float() * r.scale, r.values, atol=1e-5)
    zero_all = EditOnlyRecorder({"block_output.conv2": lambda v, s, z: v * 0})
    attach(qat, zero_all)
    with torch.no_grad():
        out_zero = qat((x / 255 - 0.5) / 0.25)
    assert zero_all.records == {}
    assert torch.allclose(out_zero, out_zero[0].expand_as(out_zero)), "zeroing conv2 makes every image alike"
    attach(qat, None)
