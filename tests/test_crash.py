"""kill -9 at a random point, then resume: the same weights and the same search result as an uninterrupted run,
and no temp file left behind.

Each run is a subprocess of ``main.py`` on the shipped sample. The kill comes a seeded random delay after the
run's first checkpoint appears (``TRISEG_CRASH_SEED`` picks another point), somewhere in the later epochs or
episodes, the final evaluation or the writing of the outputs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SEED = int(os.environ.get("TRISEG_CRASH_SEED", "16"))
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}

TRAIN = ["train_float", "--model", "lenet5", "--epochs", "6", "--max-train-batches", "6", "--batch-size", "32",
         "--val-size", "48", "--seed", "1", "--workers", "1"]
SEARCH = ["search", "--model", "lenet5", "--episodes", "120", "--checkpoint-every", "10", "--update-timestep", "10",
          "--calib-batches", "2", "--batch-size", "16", "--val-size", "48", "--top-k", "5", "--seed", "2",
          "--workers", "1", "--result-file", "r.json"]
WALL_TIMES = ("search_wall_time_s", "selection_wall_time_s")


def _start(argv: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(ROOT / "main.py"), "--mode", *argv, "--output-dir", str(out)],
                            cwd=out.parent, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]


def _timed_run(argv: list[str], out: Path, checkpoint: Path) -> tuple[float, float]:
    """Run to the end; (seconds to the first checkpoint, seconds from it to the end)."""
    t0 = time.monotonic()
    proc = _start(argv, out)
    first = None
    while proc.poll() is None:
        if first is None and checkpoint.exists():
            first = time.monotonic() - t0
        time.sleep(0.01)
    _finish(proc)
    assert first is not None, "the run ended before its first checkpoint"
    return first, time.monotonic() - t0 - first


def _killed_run(argv: list[str], out: Path, checkpoint: Path, rest: float, rng: random.Random) -> bool:
    """Start, wait for the first checkpoint, SIGKILL after a random part of the rest; whether it was killed."""
    proc = _start(argv, out)
    while not checkpoint.exists() and proc.poll() is None:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.8) * rest)
    if proc.poll() is not None:
        proc.communicate()
        return False
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    return proc.returncode == -signal.SIGKILL


def _interrupted(argv: list[str], out: Path, checkpoint: Path, rest: float, resume: list[str]) -> None:
    """Kill a run at a random point (retrying closer to its first checkpoint when it ended first), then resume it."""
    rng = random.Random(SEED)
    for attempt in range(4):
        if attempt:
            shutil.rmtree(out)
        if _killed_run(argv, out, checkpoint, rest / 2**attempt, rng):
            break
    else:
        raise AssertionError("every run ended before its kill")
    _finish(_start([*argv, *resume], out))


def _temp_files(*folders: Path) -> list[Path]:
    return [p for folder in folders for p in folder.rglob("*.tmp")]


def test_training_killed_and_resumed_ends_bit_for_bit_like_a_full_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    _, rest = _timed_run(TRAIN, full, full / "checkpoints" / "lenet5_float.ckpt")
    _interrupted(TRAIN, part, part / "checkpoints" / "lenet5_float.ckpt", rest, ["--resume-or-start"])
    a = torch.load(full / "lenet5_float_unfused.pth", weights_only=False)
    b = torch.load(part / "lenet5_float_unfused.pth", weights_only=False)
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert value.dtype == b["state_dict"][key].dtype and torch.equal(value, b["state_dict"][key]), key
    assert a["meta"] == b["meta"]
    assert _temp_files(full, part) == []


def test_search_killed_and_resumed_ends_like_a_full_run(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    ckpt = Path("checkpoints") / "lenet5__ppo__2__r.search.ckpt"
    _, rest = _timed_run(SEARCH, full, full / ckpt)
    _interrupted(SEARCH, part, part / ckpt, rest, ["--resume"])
    results = [json.loads((d / "tri_ppo_int_codes" / "r.json").read_text()) for d in (full, part)]
    for r in results:
        for key in WALL_TIMES:
            r.pop(key)
    assert results[0] == results[1]
    histories = [(d / "tri_ppo_int_codes" / "r.history.json").read_text() for d in (full, part)]
    assert histories[0] == histories[1] and len(json.loads(histories[0])) == 120
    assert _temp_files(full, part) == []
