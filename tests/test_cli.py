"""Both front-ends: every mode has --help, bad input gives one line and a non-zero exit."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from triseg.cli import build_parser, legacy_main, lsq, main
from triseg.cli.modes import all_modes
from triseg.cli.parser import offered
from triseg.jobs import LsqInferConfig, LsqQatConfig, LsqTrainConfig
from triseg.options import Options, flag

MODES = all_modes()
LSQ_MODES = [m.name for m in lsq.MODES]

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """main.py in a subprocess that sees an empty model zoo."""
    (cwd / "empty-zoo").mkdir(exist_ok=True)
    env = {**os.environ, "TRISEG_ZOO_DIR": str(cwd / "empty-zoo")}
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=env)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_has_help_listing_every_option(mode, capsys):
    with pytest.raises(SystemExit) as ex:
        main([mode, "--help"])
    assert ex.value.code == 0
    shown = capsys.readouterr().out
    config = MODES[mode].config
    for f in dataclasses.fields(config):
        if not offered(config, f):
            assert flag(f.name) not in shown, f"{mode} --help offers {flag(f.name)}, which it does not use"
            continue
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        names = [g.name for g in dataclasses.fields(sub)] if isinstance(sub, Options) else [f.name]
        for name in names:
            assert flag(name) in shown, f"{mode} --help lacks {flag(name)}"


@pytest.mark.parametrize("mode", LSQ_MODES)
def test_lsq_modes_have_help_in_both_front_ends(mode, capsys):
    for call in (lambda: main([mode, "--help"]), lambda: legacy_main(["--mode", mode, "--help"])):
        with pytest.raises(SystemExit) as ex:
            call()
        assert ex.value.code == 0
        shown = capsys.readouterr().out
        assert "usage:" in shown and "--workers WORKERS, --threads WORKERS" in shown
        assert ("--output-dir OUTPUT_DIR, --out-dir OUTPUT_DIR" in shown) == (mode != "lsq-infer")
        assert "--loader-workers" in shown


def test_lsq_modes_are_in_the_registry():
    assert LSQ_MODES == ["lsq-train", "lsq-qat", "lsq-infer"]
    assert [MODES[m].config for m in LSQ_MODES] == [LsqTrainConfig, LsqQatConfig, LsqInferConfig]


def test_legacy_main_lists_and_checks_lsq_modes(tmp_path, capsys):
    assert legacy_main(["--help"]) == 0
    shown = capsys.readouterr().out
    assert all(m in shown for m in LSQ_MODES)
    run = tmp_path / "run"
    assert legacy_main(["--mode", "lsq-qat", "--epochs", "1", "--out-dir", str(run), "--w-num-bits", "9"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --w-num-bits must be from 2 to 8 bits, got 9\n" and not run.exists()


def test_argparse_only_in_the_cli_package():
    users = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "triseg").rglob("*.py")
                   if "argparse" in path.read_text() and path.relative_to(ROOT / "triseg").parts[0] != "cli")
    assert users == []
    assert not (ROOT / "triseg" / "lsq" / "cli.py").exists()


def test_warnings_reach_the_user_as_one_line(monkeypatch, capsys):
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # restored after the test
    assert main(["models"]) == 0
    shown = warnings.formatwarning(UserWarning("no top-k config stays within 2.0"), UserWarning, "run.py", 122)
    assert shown == "warning: no top-k config stays within 2.0\n"


def test_unknown_model_and_mode_list_the_choices(tmp_path, capsys):
    assert main(["train_float", "--model", "lenet6", "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "lenet5" in err and "alexnet" in err
    assert legacy_main(["--mode", "fly"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "train_float" in err and "eval_int8" in err


def test_missing_prerequisite_names_the_command(tmp_path):
    proc = _run("--mode", "train_qat", "--model", "alexnet", "--qat-epochs", "10", "--qat-lr", "0.001",
                "--batch-size", "128", "--output-dir", str(tmp_path / "outputs"), cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "alexnet_qat_preconvert.pth" not in lines[0]
    assert "alexnet_float_unfused.pth not found: run train_float first" in lines[0]
    proc = _run("--mode", "eval_int8", "--output-dir", str(tmp_path / "outputs"), cwd=tmp_path)
    assert proc.returncode == 2 and "vgg16_int8.pth not found: run export_int8 first" in proc.stderr


def test_bad_option_values_are_one_line(tmp_path, capsys):
    assert main(["train_float", "--model", "lenet5", "--batch-size", "0", "--output-dir", str(tmp_path)]) == 2
    assert main(["train_float", "--model", "lenet5", "--data-dir", str(tmp_path / "none")]) == 2
    errs = capsys.readouterr().err.strip().splitlines()
    assert len(errs) == 2 and "batch-size" in errs[0] and "none not found" in errs[1]
    with pytest.raises(SystemExit) as ex:
        main(["train_float", "--epochs", "many"])
    assert ex.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_config_errors(tmp_path, capsys):
    cfg = {"layers": {"conv1": {"t1_code": 3, "v1_code": 6, "t2_code": 9, "v2_code": 12, "tmax_code": 14}},
           "model": "alexnet", "backend": "fbgemm"}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cfg))
    assert main(["eval_ppo_int8", "--model", "lenet5", "--config-path", str(path)]) == 2
    assert "is for model alexnet" in capsys.readouterr().err
    cfg["model"] = "lenet5"
    cfg["layers"]["conv1"]["v1_code"] = 2
    path.write_text(json.dumps(cfg))
    assert main(["eval_ppo_int8", "--model", "lenet5", "--config-path", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("note:")]
    assert len(errors) == 1 and "layer conv1: v1 2 must be in [t1+1, t2-1] = [4, 8]" in errors[0]


def test_eval_runs_teacher_and_student_once_over_test(tmp_path, monkeypatch, capsys, sample, one_thread):
    """eval_ppo_int8: one counted pass of the teacher and one of the student (it was two each), with the
    accuracies, coverage and hardware counts of separate passes."""
    from triseg import api
    from triseg.search import select

    layers = {"conv2": {"t1_code": 4, "v1_code": 8, "t2_code": 12, "v2_code": 20, "tmax_code": 30}}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"layers": layers, "model": "lenet5", "backend": "fbgemm"}))
    calls: list[int] = []

    def counting(model, config, split, *args, **kwargs):
        calls.append(len(config))
        return count(model, config, split, *args, **kwargs)

    count = select.count
    monkeypatch.setattr(select, "count", counting)
    assert main(["eval_ppo_int8", "--model", "lenet5", "--config-path", str(path), "--output-dir",
                 str(tmp_path), "--batch-size", "40"]) == 0
    assert sorted(calls) == [0, 1]
    out = json.loads((tmp_path / "tri_ppo_int_codes" / "c.eval.json").read_text())
    teacher = api.load_teacher("lenet5", tmp_path / "none", device="cpu")
    config = {"conv2": api.LayerCodes.from_json("conv2", layers["conv2"])}
    t = api.evaluate_student(teacher.model, {}, sample.test, 40)
    s = api.evaluate_student(teacher.model, config, sample.test, 40)
    assert out["images"] == len(sample.test) == 120
    assert (out["acc_teacher"], out["acc_student"]) == (round(t.accuracy, 4), round(s.accuracy, 4))
    assert out["coverage"] == s.coverage and out["mapped_share"] == s.mapped_share
    assert out["hardware"] == api.hardware_report(teacher.model, config, sample.test, "test", None, 40).to_json()


def test_pipeline_end_to_end_on_the_sample(tmp_path):
    out = str(tmp_path / "outputs")
    for argv in (["--mode", "train_float", "--model", "lenet5", "--epochs", "1", "--batch-size", "64"],
                 ["--mode", "train_qat", "--model", "lenet5", "--qat-epochs", "1", "--batch-size", "64"],
                 ["--mode", "export_int8", "--model", "lenet5"],
                 ["--mode", "eval_int8", "--model", "lenet5"]):
        proc = _run(*argv, "--output-dir", out, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-500:]
    result = json.loads((tmp_path / "outputs" / "lenet5_int8_eval.json").read_text())
    correct = result["acc_int8"] * result["images"] / 100
    assert result["images"] == 120 and abs(correct - round(correct)) < 1e-6 and result["top1_agreement"] > 80
    for name in ("lenet5_float_unfused.pth", "lenet5_qat_preconvert.pth", "lenet5_int8.pth"):
        assert (tmp_path / "outputs" / name).exists()


def documented_commands() -> list[str]:
    """Single-line ``python main.py ...`` / ``triseg ...`` commands of the README and docs/ (no placeholders)."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            text = line.split("  #")[0].strip()
            if not text.startswith(("python main.py ", "triseg ")) or text.endswith("\\"):
                continue
            if text.startswith("triseg ") and text.split()[1] not in MODES:
                continue
            if any(mark in text for mark in ("$", "...", " M ", " M", "<", "E ", " Q")):
                continue
            found.append(text)
    return found


@pytest.mark.parametrize("command", documented_commands())
def test_documented_commands_parse(command):
    """Every documented command still names options its mode has (nothing renamed or dropped)."""
    words = command.split()
    if words[0] == "python":
        argv, parse = words[2:], lambda a: build_parser(prog="main.py").parse_args(legacy_argv(a))
    else:
        argv, parse = words[1:], lambda a: build_parser().parse_args(a)
    args = parse(argv)
    assert args.mode_entry.name == (legacy_argv(argv)[0] if words[0] == "python" else argv[0])


def legacy_argv(argv: list[str]) -> list[str]:
    """``--mode X rest`` as the subcommand form ``X rest``."""
    i = argv.index("--mode")
    return [argv[i + 1], *argv[:i], *argv[i + 2:]]
