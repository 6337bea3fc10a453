"""The zoo: the default command's model is found there, zoo_add ships a light entry (half-precision QAT,
no float stage) whose manifest says how to rebuild what it leaves out."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from triseg import artifacts, quant
from triseg.cli import legacy_main, main
from triseg.cli.parser import parse_options
from triseg.data import batches
from triseg.errors import TrisegError
from triseg.jobs import SearchConfig
from triseg.models import build_model
from triseg.teacher import load_teacher

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_COMMAND = ["--episodes", "500", "--max-acc-drop", "2.0", "--kd-T", "2.0"]
TRAIN_FLOAT = "python main.py --mode train_float --model lenet5 --epochs 30 --data-dir cifar10-jpg.tar.gz"
TRAIN_QAT = "python main.py --mode train_qat --model lenet5 --qat-epochs 10 --data-dir cifar10-jpg.tar.gz"


def test_every_shipped_zoo_file_matches_its_manifest_checksum() -> None:
    manifest = json.loads((ROOT / "zoo/manifest.json").read_text())
    shipped = {entry["file"]: entry["sha256"] for model in manifest.values() for entry in model["files"].values()}
    assert {"vgg16_int8.pth", "vgg16_qat_preconvert.pth", "nin_int8.pth"} <= set(shipped)
    assert sorted(p.name for p in (ROOT / "zoo").glob("*.pth")) == sorted(shipped)
    for name, digest in shipped.items():
        assert artifacts.sha256(ROOT / "zoo" / name) == digest, name
    assert sum((ROOT / "zoo" / name).stat().st_size for name in shipped) < 150e6


@pytest.mark.parametrize("name", ["vgg16", "nin", "mobilenetv1"])
def test_the_shipped_teachers_load_on_the_cpu_and_classify(name, sample, one_thread) -> None:
    """The teachers trained for issue 14 (VGG16, the default command's) load without a GPU and classify the
    shipped sample's training images (VGG16 0.98, NiN 1.00 of the first 64 when written; chance is 0.1)."""
    teacher = load_teacher(name, str(ROOT / "no-such-folder"), device="cpu")
    assert teacher.path == artifacts.ZOO_DIR / f"{name}_int8.pth"
    x, y = next(batches(sample.train, 64))
    with torch.no_grad():
        acc = teacher.model(x).argmax(1).eq(y).float().mean().item()
    assert acc > 0.8


def test_default_command_without_a_zoo_model_is_one_line_saying_how_to_build_it(tmp_path, monkeypatch, capsys):
    """A zoo whose manifest lacks vgg16 (a clone before it was trained, or a user's own zoo)."""
    monkeypatch.setattr(artifacts, "ZOO_DIR", tmp_path / "zoo")
    (tmp_path / "zoo").mkdir()
    manifest = json.loads((ROOT / "zoo/manifest.json").read_text())
    del manifest["vgg16"]
    (tmp_path / "zoo/manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    assert legacy_main(["--mode", "train_ppo_triseg", *DEFAULT_COMMAND]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: outputs/vgg16_int8.pth not found: run export_int8 first "
                                                   "(after train_float, train_qat)")
    assert f"has no vgg16_int8.pth; it has int8 models of {', '.join(sorted(manifest))} (--model)" in err
    assert not (tmp_path / "outputs/tri_ppo_int_codes").exists()


def test_default_command_finds_vgg16_in_the_zoo(tmp_path, monkeypatch, sample, capsys, one_thread):
    """A calibrated untrained VGG16 stands in for the trained one: the bare command's model is vgg16, and
    with nothing in outputs/ it loads the zoo's file."""
    torch.manual_seed(0)
    model = artifacts.prepare_for_qat(build_model("vgg16"), "fbgemm")
    with torch.no_grad():
        model(next(batches(sample.train, 4))[0])
    zoo_file = artifacts.save_stage(quant.convert(model.eval(), "fbgemm"), tmp_path / "zoo", "vgg16", "int8",
                                    backend="fbgemm")
    monkeypatch.setattr(artifacts, "ZOO_DIR", tmp_path / "zoo")
    monkeypatch.chdir(tmp_path)
    cfg = parse_options(SearchConfig, DEFAULT_COMMAND)
    assert (cfg.model, cfg.output_dir, cfg.episodes) == ("vgg16", "outputs", 500)
    teacher = load_teacher(cfg.model, cfg.output_dir, device="cpu")
    assert teacher.path == zoo_file and "using the zoo's" in capsys.readouterr().err
    assert teacher.model.layers()[0] == "conv1_1"


@pytest.fixture
def lenet_outputs(tmp_path: Path) -> Path:
    """The zoo's LeNet-5 stages and an eval_int8 JSON in an output folder, as zoo_add reads them."""
    out = tmp_path / "outputs"
    out.mkdir()
    for stage in artifacts.STAGES:
        shutil.copy(artifacts.stage_path(artifacts.ZOO_DIR, "lenet5", stage), out)
    (out / "lenet5_int8_eval.json").write_text(json.dumps(
        {"model": "lenet5", "acc_qat": 71.9, "acc_int8": 71.86, "top1_agreement": 97.81, "backend": "fbgemm",
         "images": 8000}))
    return out


def test_zoo_add_ships_half_precision_qat_without_the_float_stage(lenet_outputs, tmp_path, monkeypatch, sample):
    zoo = tmp_path / "zoo"
    assert main(["zoo_add", "--model", "lenet5", "--output-dir", str(lenet_outputs), "--zoo-dir", str(zoo),
                 "--half-qat", "--without-float", "--command", TRAIN_FLOAT, "--command", TRAIN_QAT]) == 0
    entry = json.loads((zoo / "manifest.json").read_text())["lenet5"]
    assert set(entry["files"]) == {"qat", "int8"} and not (zoo / "lenet5_float_unfused.pth").exists()
    assert entry["left_out"]["float"]["rebuild"] == TRAIN_FLOAT
    assert entry["files"]["qat"]["float16_weights"].endswith(TRAIN_FLOAT + " && " + TRAIN_QAT)
    src_qat = artifacts.stage_path(lenet_outputs, "lenet5", "qat")
    assert entry["files"]["qat"]["bytes"] < 0.6 * src_qat.stat().st_size
    int8_file = artifacts.stage_path(zoo, "lenet5", "int8")
    assert int8_file.read_bytes() == artifacts.stage_path(lenet_outputs, "lenet5", "int8").read_bytes()
    assert entry["files"]["int8"]["sha256"] == artifacts.sha256(int8_file)

    qat, backend = artifacts.load_qat(zoo, "lenet5")
    assert all(v.dtype != torch.float16 for v in qat.state_dict().values())
    full, _ = artifacts.load_qat(lenet_outputs, "lenet5")
    half_int8, full_int8 = quant.convert(qat, "fbgemm"), quant.convert(full, "fbgemm")
    moved = total = 0
    for (name, a), (_, b) in zip(half_int8.named_modules(), full_int8.named_modules()):
        ia, ib = quant.int8_layer(a), quant.int8_layer(b)
        if ia is not None and ia["kind"] in ("conv", "linear"):
            assert ia["scale"] == ib["scale"] and torch.equal(ia["w_scale"], ib["w_scale"]), name
            diff = (ia["weight"] - ib["weight"]).abs()
            assert int(diff.max()) <= 1, name
            moved, total = moved + int((diff > 0).sum()), total + diff.numel()
    assert moved / total < 0.01  # measured 0.52 % of LeNet-5's weights (AlexNet 0.47 %)
    x, _ = next(batches(sample.test, 120))
    with torch.no_grad():
        agree = (half_int8(x).argmax(1) == full_int8(x).argmax(1)).float().mean().item()
    assert agree >= 0.98  # measured 119 of 120

    monkeypatch.setattr(artifacts, "ZOO_DIR", zoo)
    message = f"leaves out lenet5's float stage, rebuild it with: {TRAIN_FLOAT}"
    with pytest.raises(TrisegError, match=re.escape(message)):
        artifacts.load_float(tmp_path / "elsewhere", "lenet5")


def test_zoo_add_without_qat_ships_only_the_int8_model(lenet_outputs, tmp_path, monkeypatch, capsys, sample):
    zoo = tmp_path / "zoo"
    assert main(["zoo_add", "--model", "lenet5", "--output-dir", str(lenet_outputs), "--zoo-dir", str(zoo),
                 "--without-qat", "--command", TRAIN_FLOAT, "--command", TRAIN_QAT]) == 0
    entry = json.loads((zoo / "manifest.json").read_text())["lenet5"]
    assert set(entry["files"]) == {"int8"} and sorted(p.name for p in zoo.iterdir()) == ["lenet5_int8.pth",
                                                                                          "manifest.json"]
    assert entry["left_out"]["float"]["rebuild"] == TRAIN_FLOAT
    assert entry["left_out"]["qat"]["rebuild"] == TRAIN_FLOAT + " && " + TRAIN_QAT
    assert entry["left_out"]["qat"]["bytes"] == artifacts.stage_path(lenet_outputs, "lenet5", "qat").stat().st_size
    monkeypatch.setattr(artifacts, "ZOO_DIR", zoo)
    with pytest.raises(TrisegError, match=re.escape(f"leaves out lenet5's qat stage, rebuild it with: {TRAIN_FLOAT} && "
                                                    f"{TRAIN_QAT}")):
        artifacts.load_qat(tmp_path / "elsewhere", "lenet5")
    model, _ = artifacts.load_int8(zoo, "lenet5")  # what the searches read
    x, y = next(batches(sample.test, 64))
    with torch.no_grad():
        assert model(x).argmax(1).eq(y).float().mean().item() > 0.3  # a trained model, not chance (0.1)
    capsys.readouterr()
    assert main(["zoo_add", "--model", "lenet5", "--output-dir", str(lenet_outputs), "--zoo-dir",
                 str(tmp_path / "zoo2"), "--without-qat", "--half-qat"]) == 2
    assert "--half-qat and --without-qat conflict" in capsys.readouterr().err
    assert not (tmp_path / "zoo2").exists()


def test_lsq_zoo_add_ships_a_finished_run_that_lsq_qat_starts_from(tmp_path, capsys) -> None:
    """The shipped file has the model and history but no optimizer state; lsq-qat starts from it; a run
    without its end-of-run metrics is refused with one line and nothing written."""
    common = ["--train-limit", "64", "--eval-limit", "32", "--batch-size", "32", "--log-dir", str(tmp_path / "tb")]
    run, zoo = tmp_path / "float", tmp_path / "lsqzoo"
    assert main(["lsq-train", "--model", "tiny_vgg", "--epochs", "1", "--output-dir", str(run), *common]) == 0
    metrics = (run / "metrics.json").read_text()
    (run / "metrics.json").unlink()
    assert main(["lsq-zoo-add", "--run-dir", str(run), "--name", "tiny", "--zoo-dir", str(zoo)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a finished run" in err and not zoo.exists()
    (run / "metrics.json").write_text(metrics)
    command = "triseg lsq-train --model tiny_vgg --epochs 1"
    assert main(["lsq-zoo-add", "--run-dir", str(run), "--name", "tiny", "--zoo-dir", str(zoo),
                 "--command", command]) == 0
    entry = json.loads((zoo / "manifest.json").read_text())["tiny"]
    shipped = torch.load(zoo / "tiny.pt", weights_only=True)
    full = torch.load(run / "checkpoint.pt", weights_only=True)
    assert "optimizer" in full and "optimizer" not in shipped and "scheduler" not in shipped
    assert all(torch.equal(shipped["model"][k], v) for k, v in full["model"].items())
    assert entry["sha256"] == artifacts.sha256(zoo / "tiny.pt")
    assert entry["bytes"] < (run / "checkpoint.pt").stat().st_size
    assert (entry["kind"], entry["model"], entry["epochs"], entry["commands"]) == ("float", "tiny_vgg", 1, [command])
    assert entry["acc_test"] == round(json.loads(metrics)["test_acc"], 2)
    assert main(["lsq-qat", "--epochs", "1", "--output-dir", str(tmp_path / "qat"), "--float-checkpoint",
                 str(zoo / "tiny.pt"), "--w-num-bits", "2", "--a-num-bits", "2", *common]) == 0


def test_every_shipped_lsq_zoo_file_matches_its_manifest() -> None:
    """zoo/lsq/: each file's sha256, and the model it holds is the one its entry names."""
    from triseg.lsq.train import load_lsq_checkpoint, model_from_checkpoint

    manifest = json.loads((ROOT / "zoo/lsq/manifest.json").read_text())
    assert sorted(p.name for p in (ROOT / "zoo/lsq").glob("*.pt")) == sorted(e["file"] for e in manifest.values())
    for name, entry in manifest.items():
        path = ROOT / "zoo/lsq" / entry["file"]
        assert artifacts.sha256(path) == entry["sha256"], name
        ckpt = load_lsq_checkpoint(path)
        made = (ckpt["kind"], ckpt["meta"]["model"], ckpt["epoch"])
        assert made == (entry["kind"], entry["model"], entry["epochs"]), name
        model_from_checkpoint(ckpt)
