"""What the robustness promises rest on: damaged caches rebuilt, stale temp files removed, --resume-or-start,
--stop-after checkpoints what it reports, a result's own teacher found and any other one refused, and the
CLI's last line of defence."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from triseg import artifacts
from triseg.cli import main, pipeline
from triseg.data import SAMPLE_ARCHIVE, load_cifar10
from triseg.errors import TrisegError
from triseg.paths import clean_stale_temps, temp_path
from triseg.teacher import load_teacher

from test_analysis import write_config

LENET_TEACHER = artifacts.stage_path(artifacts.ZOO_DIR, "lenet5", "int8")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_damaged_data_cache_is_rebuilt_with_a_note(tmp_path, capsys):
    archive = tmp_path / "cifar.tar.gz"
    shutil.copyfile(SAMPLE_ARCHIVE, archive)
    first = load_cifar10(archive)
    (cache,) = tmp_path.glob(".cifar.tar.gz.triseg-cache-*.pt")
    cache.write_bytes(cache.read_bytes()[:1000])
    capsys.readouterr()
    again = load_cifar10(archive)
    assert "note: data cache" in capsys.readouterr().err
    assert torch.equal(first.train.x, again.train.x) and torch.equal(first.test.y, again.test.y)
    load_cifar10(archive)
    assert capsys.readouterr().err == ""


def test_the_data_cache_is_written_only_after_the_inputs_are_checked(tmp_path):
    archive = tmp_path / "cifar.tar.gz"
    shutil.copyfile(SAMPLE_ARCHIVE, archive)
    with pytest.raises(TrisegError, match="--val-size"):
        load_cifar10(archive, val_size=100_000)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar.tar.gz"]


def test_stale_temp_files_go_live_ones_stay(tmp_path):
    dead, live = _dead_pid(), subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".result.json.{dead}.tmp"
        running = tmp_path / f".result.json.{live.pid}.tmp"
        mine = temp_path(tmp_path / "result.json")
        other = tmp_path / ".notes.txt"
        for p in (stale, running, mine, other):
            p.write_text("x")
        assert clean_stale_temps(tmp_path) == [stale]
        assert not stale.exists() and running.exists() and mine.exists() and other.exists()
    finally:
        live.kill()
        live.wait()


def test_a_mode_removes_the_temp_files_a_killed_run_left(tmp_path):
    out = tmp_path / "out"
    dead = _dead_pid()
    left = [out / f".lenet5_int8_eval.json.{dead}.tmp", out / "checkpoints" / f".lenet5_float.ckpt.{dead}.tmp"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half a file")
    archive = tmp_path / "data" / "cifar.tar.gz"
    archive.parent.mkdir()
    shutil.copyfile(SAMPLE_ARCHIVE, archive)
    cache_tmp = archive.parent / f".cifar.tar.gz.triseg-cache-0123456789ab.pt.{dead}.tmp"
    old_style = archive.parent / f".cifar.tar.gz.triseg-cache-0123456789ab.tmp{dead}"  # earlier versions' name
    for p in (cache_tmp, old_style):
        p.write_bytes(b"half a cache")
    assert main(["eval_int8", "--model", "lenet5", "--output-dir", str(out), "--data-dir", str(archive),
                 "--workers", "1"]) == 0
    assert not any(p.exists() for p in [*left, cache_tmp, old_style])
    assert list(tmp_path.rglob("*.tmp")) == []


def test_resume_or_start(tmp_path, capsys):
    argv = ["train_float", "--model", "lenet5", "--epochs", "1", "--max-train-batches", "1", "--batch-size", "32",
            "--output-dir", str(tmp_path), "--workers", "1"]
    assert main([*argv, "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
    assert main([*argv, "--resume-or-start"]) == 0
    stage = tmp_path / "lenet5_float_unfused.pth"
    first = torch.load(stage, weights_only=False)["state_dict"]
    assert main([*argv, "--resume-or-start"]) == 0  # the checkpoint holds every epoch: nothing is trained again
    again = torch.load(stage, weights_only=False)["state_dict"]
    assert all(torch.equal(first[k], again[k]) for k in first)


def test_stop_after_checkpoints_the_episodes_it_reports(tmp_path, capsys):
    argv = ["search", "--model", "lenet5", "--search", "random", "--episodes", "20", "--checkpoint-every", "8",
            "--calib-batches", "1", "--batch-size", "16", "--val-size", "48", "--no-test", "--top-k", "3",
            "--output-dir", str(tmp_path), "--workers", "1"]
    assert main([*argv, "--stop-after", "13"]) == 0
    assert "stopped after 13 episodes" in capsys.readouterr().out
    state = torch.load(tmp_path / "checkpoints" / "lenet5__random__0__result.search.ckpt", weights_only=False)
    assert state["episode"] == 13 and len(state["history"]) == 13
    assert main([*argv, "--resume", "--stop-after", "20"]) == 0  # stopping at the budget is finishing
    assert json.loads((tmp_path / "tri_ppo_int_codes" / "result.history.json").read_text())[-1]["episode"] == 19


def test_a_teacher_records_its_file_relative_to_its_run(tmp_path):
    shutil.copyfile(LENET_TEACHER, tmp_path / "lenet5_int8.pth")
    run = load_teacher("lenet5", tmp_path, device="cpu").identity(val_acc=12.5)
    assert run == {"file": "lenet5_int8.pth", "sha256": artifacts.sha256(LENET_TEACHER), "backend": "fbgemm",
                   "val_acc": 12.5}
    zoo = load_teacher("lenet5", tmp_path / "elsewhere", device="cpu").identity()
    assert zoo["file"] == str(LENET_TEACHER.resolve()) and "val_acc" not in zoo


@pytest.fixture
def own_teacher_run(tmp_path: Path) -> Path:
    """A search folder whose teacher differs (by its bytes) from the zoo's, and a result that records it."""
    run = tmp_path / "run"
    run.mkdir()
    blob = torch.load(LENET_TEACHER, weights_only=False)
    blob["meta"] = {**blob.get("meta", {}), "copy": "of the zoo's"}
    torch.save(blob, run / "lenet5_int8.pth")
    teacher = {"file": "lenet5_int8.pth", "sha256": artifacts.sha256(run / "lenet5_int8.pth"), "backend": "fbgemm"}
    return write_config(run / "tri_ppo_int_codes" / "demo.json", teacher=teacher, max_acc_drop=2.0,
                        validation={"acc_teacher": 50.0, "acc_student": 49.0, "acc_drop": 1.0, "candidates": []})


def test_the_report_uses_the_teacher_of_the_search(own_teacher_run, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default --output-dir (outputs/) holds no model: the zoo's would be used
    argv = ["report", "--model", "lenet5", "--config-path", str(own_teacher_run), "--max-images", "16",
            "--hist-batches", "1", "--workers", "1"]
    assert main(argv) == 0
    html = (tmp_path / "outputs" / "reports" / "demo.html").read_text()
    assert "NOT the search" not in html and "sha256 " + artifacts.sha256(own_teacher_run.parents[1] /
                                                                          "lenet5_int8.pth")[:12] in html
    assert main(["analyze_sensitivity", *argv[1:5], "--max-images", "16"]) == 0
    (own_teacher_run.parents[1] / "lenet5_int8.pth").unlink()
    capsys.readouterr()
    assert main(argv) == 2
    assert "was searched on another teacher" in capsys.readouterr().err
    assert main([*argv, "--allow-other-teacher", "--report-file", "other.html"]) == 0
    assert "warning:" in capsys.readouterr().err
    other = (tmp_path / "outputs" / "reports" / "other.html").read_text()
    assert "NOT the search" in other and "--allow-other-teacher" in other


def test_unexpected_errors_are_one_line_and_shown_on_request(monkeypatch, capsys):
    def boom(cfg):
        raise RuntimeError("deep inside\nsomething broke")

    monkeypatch.setattr(pipeline, "MODES", [dataclasses.replace(pipeline.MODES[0], run=boom), *pipeline.MODES[1:]])
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == ("error: unexpected RuntimeError: deep inside something broke (a bug in triseg: please report it "
                   "with the command; TRISEG_TRACEBACK=1 shows the traceback)\n")
    monkeypatch.setenv("TRISEG_TRACEBACK", "1")
    assert main(["models"]) == 2
    assert "Traceback" in capsys.readouterr().err


def test_os_errors_while_running_are_one_line(monkeypatch, capsys):
    def full(cfg):
        raise OSError(28, "No space left on device", "outputs/x.json")

    monkeypatch.setattr(pipeline, "MODES", [dataclasses.replace(pipeline.MODES[0], run=full), *pipeline.MODES[1:]])
    assert main(["models"]) == 2
    assert capsys.readouterr().err == "error: outputs/x.json: No space left on device (free some disk space)\n"


def test_workers_beyond_four_per_core_are_refused(capsys):
    assert main(["train_float", "--workers", str(4 * (os.cpu_count() or 1) + 1)]) == 2
    assert "--workers must be at most" in capsys.readouterr().err
