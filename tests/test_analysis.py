"""Analysis modes on LeNet-5 with the bundled sample: files, keys, shapes, and numbers against numpy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from triseg import artifacts
from triseg.analysis.acts import sample_batches
from triseg.analysis.stats import RunningStats, code_percentiles, weight_stats
from triseg.approx.calibrate import LayerHistogram
from triseg.cli import main
from triseg.data import load_cifar10

LAYERS = ["conv1", "conv2", "fc1", "fc2"]
CONFIG = {"conv1": (5, 13, 20, 24, 31), "conv2": (7, 13, 17, 23, 36), "fc1": (9, 25, 33, 39, 50),
          "fc2": (9, 15, 18, 21, 52)}


def write_config(path: Path, layers: dict[str, tuple[int, ...]] = CONFIG, **extra) -> Path:
    """A LeNet-5 result JSON with the given codes (t1, v1, t2, v2, tmax)."""
    keys = ("t1_code", "v1_code", "t2_code", "v2_code", "tmax_code")
    obj = {"layers": {k: dict(zip(keys, v)) for k, v in layers.items()}, "backend": "fbgemm", "model": "lenet5",
           **extra}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def run(*argv: str) -> int:
    return main([argv[0], "--model", "lenet5", "--workers", "1", *argv[1:]])


def load_npz(folder: Path) -> list[dict[str, np.ndarray]]:
    manifest = json.loads((folder / "manifest.json").read_text())
    out = []
    for name in manifest["files"]:
        with np.load(folder / name) as z:
            out.append({k: z[k] for k in z.files})
    return out


def test_running_stats_match_numpy_over_chunks():
    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(3.0, 2.0, 1000), np.zeros(250), rng.uniform(-5, 9, 777)])
    rs = RunningStats()
    for chunk in np.array_split(data, 7):
        rs.update(torch.from_numpy(chunk))
    s = rs.as_dict()
    assert s["count"] == data.size
    assert s["mean"] == pytest.approx(data.mean(), rel=1e-12)
    assert s["variance"] == pytest.approx(data.var(), rel=1e-10)
    assert s["std"] == pytest.approx(data.std(), rel=1e-10)
    assert (s["min"], s["max"]) == (data.min(), data.max())
    assert s["zero_share"] == pytest.approx(250 / data.size)


def test_code_percentiles_match_numpy_inverted_cdf():
    rng = np.random.default_rng(1)
    codes = np.concatenate([np.zeros(5000, dtype=np.int64), rng.geometric(0.08, 20000).clip(1, 255)])
    counts = torch.bincount(torch.from_numpy(codes), minlength=256)
    info = code_percentiles(LayerHistogram(counts, negative=3), top_code=255)
    positive = codes[codes > 0]
    for q in (10, 50, 90, 99, 99.9):
        assert info["percentiles"][f"p{q:g}"] == int(np.percentile(positive, q, method="inverted_cdf")), q
    assert info["tmax_rule"] == min(255, int(np.percentile(positive, 90, method="inverted_cdf")) + 10)
    assert (info["zero"], info["positive"], info["negative"], info["activations"]) == (5000, 20000, 3, 25003)
    assert code_percentiles(LayerHistogram(counts), top_code=20)["tmax_rule"] == 20


def test_weight_stats_cover_conv_and_linear_but_not_batchnorm():
    class Tiny(nn.Module):
        TAP_MODULES = {"a": "block", "b": "add"}

        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Linear(4, 5))
            self.add = nn.Identity()

    m = Tiny()
    stats, skipped = weight_stats(m, ["a", "b"])
    w = np.concatenate([m.block[0].weight.detach().numpy().ravel(), m.block[2].weight.detach().numpy().ravel()])
    assert stats["a"]["shapes"] == [[3, 2, 3, 3], [5, 4]]
    assert stats["a"]["variance"] == pytest.approx(w.var(), rel=1e-6)
    assert stats["a"]["max"] == pytest.approx(w.max())
    assert list(skipped) == ["b"]


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    """INT8 and float dumps of 2 val batches of 16 images, and the analyses of the same batches."""
    out = tmp_path_factory.mktemp("analysis")
    common = ("--output-dir", str(out), "--num-batches", "2", "--batch-size", "16")
    assert run("dump_acts_int8", *common) == 0
    assert run("dump_acts_float", *common) == 0
    assert run("analyze_variance", *common) == 0
    assert run("collect_percentiles", "--split", "val", *common) == 0
    return out


def test_dump_int8_writes_codes_scale_and_manifest(dumps):
    folder = dumps / "activations" / "lenet5_int8"
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["stage"] == "int8" and manifest["num_batches"] == 2 and manifest["images"] == 32
    assert set(manifest["layers"]) == set(LAYERS)
    shapes = {"conv1": [6, 28, 28], "conv2": [16, 10, 10], "fc1": [120], "fc2": [84]}
    batches = load_npz(folder)
    split = load_cifar10(None, val_size=48).val
    expected_idx = sample_batches(split, 16, 2, seed=0)
    for b, arrays in enumerate(batches):
        np.testing.assert_array_equal(arrays["indices"], expected_idx[b].numpy())
        np.testing.assert_array_equal(arrays["labels"], split.y[expected_idx[b]].numpy())
        for layer in LAYERS:
            info = manifest["layers"][layer]
            assert info["shape_per_image"] == shapes[layer]
            assert arrays[layer].shape == (16, *shapes[layer]) and arrays[layer].dtype == np.int16
            assert float(arrays[f"{layer}.scale"]) == info["scale"] > 0
            zp = int(arrays[f"{layer}.zero_point"])
            assert zp == info["zero_point"]
            assert arrays[layer].min() >= -zp and arrays[layer].max() <= 255 - zp
            assert arrays[layer].max() > 0


def test_dump_float_writes_float_values(dumps):
    batches = load_npz(dumps / "activations" / "lenet5_float")
    assert len(batches) == 2
    assert batches[0]["conv1"].shape == (16, 6, 28, 28) and batches[0]["conv1"].dtype == np.float32
    assert "conv1.scale" not in batches[0]
    assert (batches[0]["conv1"] >= 0).all() and batches[0]["conv1"].max() > 0  # after ReLU


def test_dump_rerun_with_fewer_batches_removes_stale_files(dumps, tmp_path):
    common = ("--output-dir", str(tmp_path), "--batch-size", "16")
    assert run("dump_acts_int8", *common, "--num-batches", "3") == 0
    assert run("dump_acts_int8", *common, "--num-batches", "1") == 0
    folder = tmp_path / "activations" / "lenet5_int8"
    assert sorted(p.name for p in folder.glob("*.npz")) == ["batch_00000.npz"]


def test_activation_variance_matches_numpy_on_the_dumped_codes(dumps):
    acts = json.loads((dumps / "analysis" / "lenet5_int8" / "activation_variance.json").read_text())
    assert acts["images"] == 32 and acts["split"] == "val"
    batches = load_npz(dumps / "activations" / "lenet5_int8")
    for layer in LAYERS:
        values = np.concatenate([(b[layer].astype(np.float64)) * float(b[f"{layer}.scale"]) for b in batches]).ravel()
        s = acts["layers"][layer]
        assert set(s) >= {"mean", "std", "variance", "min", "max", "zero_share"}
        assert s["mean"] == pytest.approx(values.mean(), rel=1e-5)
        assert s["variance"] == pytest.approx(values.var(), rel=1e-5)
        assert s["max"] == pytest.approx(values.max(), rel=1e-5)
        assert s["zero_share"] == pytest.approx((values == 0).mean())
    weights = json.loads((dumps / "analysis" / "lenet5_int8" / "weight_variance.json").read_text())
    assert set(weights["layers"]) == set(LAYERS) and weights["skipped"] == {}
    assert weights["layers"]["conv1"]["shapes"] == [[6, 3, 5, 5]]


def test_percentiles_match_numpy_on_the_dumped_codes(dumps):
    info = json.loads((dumps / "analysis" / "lenet5_int8" / "percentiles.json").read_text())
    assert info["images"] == 32 and set(info["layers"]) == set(LAYERS)
    batches = load_npz(dumps / "activations" / "lenet5_int8")
    for layer in LAYERS:
        codes = np.concatenate([b[layer].ravel() for b in batches])
        positive = codes[codes > 0]
        got = info["layers"][layer]
        for q in (10, 50, 90, 99, 99.9):
            assert got["percentiles"][f"p{q:g}"] == int(np.percentile(positive, q, method="inverted_cdf"))
        p90 = int(np.percentile(positive, 90, method="inverted_cdf"))
        assert got["tmax_rule"] == min(info["top_code"], p90 + 10)


def test_sensitivity_ranks_every_layer_and_is_consistent(tmp_path):
    cfg = write_config(tmp_path / "cfg.json")
    assert run("analyze_sensitivity", "--output-dir", str(tmp_path), "--config-path", str(cfg),
               "--max-images", "40") == 0
    sens = json.loads((tmp_path / "analysis" / "lenet5_int8" / "sensitivity_cfg_val.json").read_text())
    assert sens["split"] == "val" and sens["images"] == 40
    assert sorted(sens["ranking"]) == sorted(LAYERS)
    only = [sens["layers"][k]["drop_only"] for k in sens["ranking"]]
    assert only == sorted(only, reverse=True)
    assert sens["drop_full"] == pytest.approx(sens["acc_teacher"] - sens["acc_student"])
    for s in sens["layers"].values():
        assert s["recovered"] == pytest.approx(sens["drop_full"] - s["drop_all_but"])

    single = write_config(tmp_path / "one.json", {"conv1": CONFIG["conv1"]})
    assert run("analyze_sensitivity", "--output-dir", str(tmp_path), "--config-path", str(single),
               "--max-images", "40", "--split", "test") == 0
    one = json.loads((tmp_path / "analysis" / "lenet5_int8" / "sensitivity_one_test.json").read_text())
    assert one["layers"]["conv1"]["drop_all_but"] == 0.0
    assert one["layers"]["conv1"]["drop_only"] == pytest.approx(one["drop_full"])


def test_one_line_errors(tmp_path, capsys, monkeypatch):
    assert run("analyze_sensitivity", "--output-dir", str(tmp_path), "--config-path", str(tmp_path / "no.json")) == 2
    assert run("dump_acts_int8", "--output-dir", str(tmp_path), "--data-dir", str(tmp_path / "nodata")) == 2
    assert run("collect_percentiles", "--output-dir", str(tmp_path), "--num-batches", "0") == 2
    monkeypatch.setattr(artifacts, "ZOO_DIR", tmp_path / "empty-zoo")
    assert run("analyze_variance", "--output-dir", str(tmp_path)) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note: ")]
    assert len(err) == 4 and all(line.startswith("error: ") for line in err), err
    assert "no.json not found" in err[0] and "nodata" in err[1] and "--num-batches" in err[2]
    assert "lenet5_int8.pth not found" in err[3]
    assert run("analyze_sensitivity", "--config-path", "x.json", "--split", "train") == 2  # selection never on train
    assert capsys.readouterr().err.strip() == "error: --split 'train' is unknown; choose one of val, test"
