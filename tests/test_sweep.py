"""Sweeps: a 4-cell grid on the shipped sample, in-process and on a local Ray; skip, resume, bad specs, no test."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import tomllib
from pathlib import Path

import pytest

from triseg import api, sweep
from triseg.cli import main

from test_job import sealed_test

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = """
output = "{out}"
models = ["lenet5"]
strategies = ["random", "exact-mse"]
seeds = [0, 1]
budgets = [4]
options = ["--top-k", "2", "--calib-batches", "1", "--batch-size", "16", "--eval-every", "2", "--checkpoint-every", "2"]
curve_points = 3
"""


def write_spec(folder: Path, out: Path, text: str = SPEC, name: str = "spec.toml") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text.format(out=out))
    return path


def sealed_loader(cfg: api.SearchConfig) -> api.Cifar10:
    """The cell's data with a test split that fails the cell when opened."""
    return sealed_test(api.load_data(cfg))


def outcome(result: api.SearchResult) -> tuple[dict, float]:
    """What must match between two runs of a cell: the chosen maps and their validation drop."""
    return {k: vars(c) for k, c in result.config.items()}, result.validation.acc_drop


@pytest.fixture(scope="module")
def swept(tmp_path_factory: pytest.TempPathFactory) -> tuple[sweep.Spec, dict]:
    """The 4-cell sweep run in-process with a sealed test split."""
    root = tmp_path_factory.mktemp("sweep")
    spec = sweep.load_spec(write_spec(root, root / "out"))
    summary = sweep.run_sweep(spec, use_ray=False, loader=sealed_loader)
    return spec, summary


def test_sweep_runs_every_cell_without_opening_test(swept):
    spec, summary = swept
    assert len(spec.cells) == 4 and summary["ran"] == 4 and summary["failed"] == {}
    for cell in spec.cells:
        status = json.loads((cell.folder / sweep.STATUS_NAME).read_text())
        assert status["state"] == "done", status  # a sealed test split opened would have failed the cell
        result = sweep.finished(cell)
        assert result is not None and result.test is None and result.settings["split_sizes"]["test"] > 0
        assert (cell.folder / sweep.LOG_NAME).read_text().strip()
    table = (spec.output / "table.md").read_text()
    assert table.count("| `lenet5__") == 2 and "± " in table and "Final test" not in table
    assert table.count("not tested") == 4  # test drop and test multiplies of both rows
    assert (spec.output / "best_so_far.png").stat().st_size > 0


def test_each_cell_scores_its_best_so_far_config_on_validation(swept):
    spec, _ = swept
    for cell in spec.cells:
        curve, result = sweep.read_curve(cell), sweep.finished(cell)
        rewards = [p["reward"] for p in curve]
        assert [p["evaluations"] for p in curve] == ([1] if "exact-mse" in cell.name else [1, 2, 4])
        assert rewards == sorted(rewards) and rewards[-1] == result.settings["best_reward"]
        # the snapshots are the history's best-so-far rewards at those counts
        history = json.loads(api.RunPaths(cell.folder, "", "", 0, sweep.RESULT_NAME).history.read_text())
        assert rewards == [history[p["evaluations"] - 1]["best"] for p in curve]
        images = result.settings["split_sizes"]["val"]
        assert all(abs(p["val_drop"] * images / 100 - round(p["val_drop"] * images / 100)) < 1e-4 for p in curve)
        if "exact-mse" in cell.name:  # one config: the best so far is the chosen one
            assert abs(curve[0]["val_drop"] - result.validation.acc_drop) < 1e-4


def test_rerun_skips_finished_cells_and_redoes_a_missing_result(swept):
    spec, _ = swept
    victim, others = spec.cells[0], spec.cells[1:]
    before = sweep.finished(victim)
    victim.result_path.unlink()
    assert api.RunPaths(victim.folder, "lenet5", "random", 0, sweep.RESULT_NAME).checkpoint.parent.is_dir()
    mtimes = {c.name: c.result_path.stat().st_mtime_ns for c in others}
    summary = sweep.run_sweep(spec, use_ray=False, loader=sealed_loader)
    assert summary["ran"] == 1 and summary["failed"] == {}
    assert {c.name: c.result_path.stat().st_mtime_ns for c in others} == mtimes
    assert outcome(sweep.finished(victim)) == outcome(before)


def test_killed_cell_resumes_to_the_uninterrupted_result(swept, tmp_path):
    spec, _ = swept
    killed = sweep.load_spec(write_spec(tmp_path, tmp_path / "out"))
    cell = next(c for c in killed.cells if "__random__" in c.name)
    stopped = dataclasses.replace(cell, argv=(*cell.argv, "--stop-after", "2"))
    assert sweep.run_cell(stopped, sealed_loader)["state"] == "stopped"
    checkpoint = api.RunPaths(cell.folder, "lenet5", "random", 0, sweep.RESULT_NAME).checkpoint
    assert checkpoint.is_file() and not cell.result_path.exists() and not cell.curve_path.exists()
    killed = sweep.Spec(killed.source, killed.output, (cell,))
    assert sweep.run_sweep(killed, use_ray=False, loader=sealed_loader)["failed"] == {}
    twin = next(c for c in spec.cells if c.name == cell.name)
    assert outcome(sweep.finished(cell)) == outcome(sweep.finished(twin))
    assert sweep.read_curve(cell) == sweep.read_curve(twin)  # snapshots before the stop came back from the checkpoint


def copied(spec: sweep.Spec, out: Path) -> sweep.Spec:
    """The spec's finished cells copied to ``out``."""
    twin = sweep.Spec(spec.source, out, tuple(
        dataclasses.replace(c, folder=out / "cells" / c.name,
                            argv=tuple(str(out / "cells" / c.name) if a == str(c.folder) else a for a in c.argv))
        for c in spec.cells))
    shutil.copytree(spec.output / "cells", twin.output / "cells")
    return twin


def column(table: str, row: str, head: str) -> str:
    """One cell of ``table.md``'s main table."""
    line = next(line for line in table.splitlines() if line.startswith(f"| `{row}` |"))
    return line.strip("| ").split(" | ")[sweep.TABLE_HEAD.index(head)]


def test_final_test_evaluates_every_seed_of_the_chosen_row_once(swept, tmp_path):
    spec, _ = swept
    out = copied(spec, tmp_path / "out")
    written = sweep.final_test(out)
    assert sorted(written) == sorted(sweep.final_path(out, c) for c in out.cells)  # one row per group
    for cell in out.cells:
        result = sweep.tested(out, cell)
        assert result is not None and result.test is not None and result.settings["sweep_cell"] == cell.name
        assert outcome(result) == outcome(sweep.finished(cell)) and result.settings["hardware"]["split"] == "test"
        assert sweep.finished(cell).test is None  # the cells themselves stay untested
    assert sweep.final_test(out) == []
    table = (out.output / "table.md").read_text()
    for row in {c.row for c in out.cells}:
        tests = [sweep.tested(out, c) for c in out.cells if c.row == row]
        assert column(table, row, "test drop (pt)") == sweep.mean_std([t.test.acc_drop for t in tests])
        assert column(table, row, "multiplies left (test)") == sweep.mean_std(
            [t.settings["hardware"]["totals"]["multiplies_left_vs_zero_skipping_int8"] for t in tests], 3)
        assert column(table, row, "val drop (pt)") == sweep.mean_std([t.validation.acc_drop for t in tests])
        assert column(table, row, "seeds") == "2"
    assert "Final test" in table and "not tested" not in table


def fake_row(result: api.SearchResult, drops: tuple[float, ...], left: float,
             objective: str = "reward") -> list[tuple[sweep.Cell, api.SearchResult]]:
    """A grid row of copies of ``result`` with the given validation drops and multiplies left."""
    rows = []
    for drop in drops:
        r = copy.deepcopy(result)
        r.validation = dataclasses.replace(r.validation, acc_drop=drop)
        r.settings.update(objective=objective, max_acc_drop=2.0,
                          hardware={"totals": {"multiplies_left_vs_zero_skipping_int8": left}})
        rows.append((None, r))
    return rows


def test_a_cell_searches_at_its_tmax_rule_with_the_shared_options(tmp_path, sample):
    text = SPEC.replace('["random", "exact-mse"]', '["exact-mse"]').replace("seeds = [0, 1]", "seeds = [0]")
    spec = sweep.load_spec(write_spec(tmp_path, tmp_path / "out", text + 'tmax = ["p30+10"]\n'))
    assert sweep.run_sweep(spec, use_ray=False, loader=sealed_loader)["failed"] == {}
    teacher = api.load_teacher("lenet5", "outputs", device="cpu")
    expected = api.build_space(teacher, sample, api.SpaceOptions(calib_batches=1, tmax_percentile=30), 16, 0).tmax
    default = api.build_space(teacher, sample, api.SpaceOptions(calib_batches=1), 16, 0).tmax
    assert expected != default, "the sample must tell the two rules apart"
    result = sweep.finished(spec.cells[0])
    assert result.settings["tmax"] == expected and result.settings["tmax_rule"] == {"percentile": 30.0, "margin": 10}
    assert result.settings["batch_size"] == 16 and result.settings["calib_batches"] == 1


def test_the_row_is_chosen_on_validation_means(swept):
    base = sweep.finished(swept[0].cells[0])
    # a: one seed at 1.0 but a mean of 2.1, beyond the limit; b: mean 1.55
    assert sweep.choose_row({"a": fake_row(base, (1.0, 3.2), 0.5), "b": fake_row(base, (1.5, 1.6), 0.6)}) == "b"
    close = {"a": fake_row(base, (0.5, 0.7), 0.7), "b": fake_row(base, (1.5, 1.7), 0.5)}
    assert sweep.choose_row(close) == "a"  # reward: the lowest drop within the limit
    savings = {k: fake_row(base, (r[0][1].val_drop, r[1][1].val_drop), sweep._multiplies(r[0][1]), "savings")
               for k, r in close.items()}
    assert sweep.choose_row(savings) == "b"  # savings: the fewest multiplies left within the limit
    assert sweep.choose_row({"a": fake_row(base, (5.0, 6.0), 0.1), "b": fake_row(base, (4.0, 4.5), 0.9)}) == "b"


def test_local_ray_gives_the_in_process_results(swept, tmp_path):
    ray = pytest.importorskip("ray")
    spec, _ = swept
    on_ray = sweep.load_spec(write_spec(tmp_path, tmp_path / "out"))
    try:
        summary = sweep.run_sweep(on_ray, max_parallel=2, use_ray=True)  # starts a local Ray
        worker_niceness = ray.get(ray.remote(lambda: os.nice(0)).remote())
    finally:
        ray.shutdown()
    assert worker_niceness == os.nice(0)  # cells run at the driver's priority, not Ray's nice 15
    assert summary["ray"] and summary["ran"] == 4 and summary["failed"] == {}
    for cell, twin in zip(on_ray.cells, spec.cells):
        assert outcome(sweep.finished(cell)) == outcome(sweep.finished(twin))


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.toml")),
                         ids=lambda p: p.name)
def test_example_specs_are_valid(path):
    spec = sweep.load_spec(path)
    raw = tomllib.loads(path.read_text())
    grid = [raw[k] for k in ("models", "strategies", "seeds", "objectives", "tmax", "budgets")]
    assert len(spec.cells) == math.prod(map(len, grid))
    assert all(c.curve_points == raw.get("curve_points", 0) for c in spec.cells)


BAD_SPECS = {
    "unknown-model": (SPEC.replace('["lenet5"]', '["lenet9"]'), "--model 'lenet9' is unknown"),
    "unknown-strategy": (SPEC.replace('"random"', '"annealing"'), "--search 'annealing' is unknown"),
    "malformed": (SPEC.replace("seeds = [0, 1]", "seeds = [0, 1"), "is not valid TOML"),
    "seed-not-a-number": (SPEC.replace("seeds = [0, 1]", 'seeds = ["zero"]'), "seeds must be a non-empty list"),
    "grid-option-shared": (SPEC.replace('"--top-k"', '"--seed", "3", "--top-k"'), "set by the grid"),
    "unknown-shared-option": (SPEC.replace('"--top-k"', '"--flux", "--top-k"'), "unrecognized arguments: --flux"),
    "unknown-key": (SPEC + 'colour = "red"\n', "unknown keys colour"),
    "negative-curve-points": (SPEC.replace("curve_points = 3", "curve_points = -1"), "curve_points must be an"),
    "options-unbalanced-quote": ("\n".join('options = "--top-k \'2"' if line.startswith("options") else line
                                           for line in SPEC.splitlines()), "cannot be split into words"),
    "teacher-dir-is-a-file": (SPEC + f'teacher_dir = "{__file__}"\n', "is a file, not a folder"),
    "grid-too-large": (SPEC.replace("seeds = [0, 1]", f"seeds = {list(range(6000))}"), "its grid has 12,000 cells"),
    "nested-too-deeply": (SPEC + "deep = " + "[" * 5000 + "]" * 5000 + "\n", "is nested too deeply"),
}


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_spec_fails_in_one_line_before_any_cell(name, tmp_path, capsys):
    text, expect = BAD_SPECS[name]
    path = write_spec(tmp_path, tmp_path / "out", text)
    assert main(["sweep", str(path)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and expect in errors[0], errors
    assert not (tmp_path / "out").exists()


def test_yaml_spec_without_pyyaml_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    path = write_spec(tmp_path, tmp_path / "out", "output: x\n", name="spec.yaml")
    assert main(["sweep", "--spec", str(path)]) == 2  # the flag spelling of SPEC
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "YAML needs PyYAML" in err


def test_a_failed_cell_is_recorded_and_does_not_stop_the_others(tmp_path):
    text = SPEC.replace('["random", "exact-mse"]', '["exact-mse"]').replace("seeds = [0, 1]", "seeds = [0]")
    spec = sweep.load_spec(write_spec(tmp_path, tmp_path / "out", text + 'tmax = ["p90+10", "p1-200"]\n'))
    summary = sweep.run_sweep(spec, use_ray=False, loader=sealed_loader)
    good, bad = spec.cells
    assert list(summary["failed"]) == [bad.name] and "can be approximated" in summary["failed"][bad.name]
    assert sweep.finished(good) is not None and sweep.finished(bad) is None
    status = json.loads((bad.folder / sweep.STATUS_NAME).read_text())
    assert status["state"] == "failed" and "\n" not in status["error"]
    mtime = good.result_path.stat().st_mtime_ns
    assert sweep.run_sweep(spec, use_ray=False, loader=sealed_loader)["ran"] == 1
    assert good.result_path.stat().st_mtime_ns == mtime


def test_killed_ray_worker_fails_its_cell_and_the_rerun_resumes_it(tmp_path):
    ray = pytest.importorskip("ray")
    text = SPEC.replace('"random", "exact-mse"', '"exact-mse", "random"').replace("seeds = [0, 1]", "seeds = [0]")
    text = text.replace("budgets = [4]", "budgets = [400]")
    spec = sweep.load_spec(write_spec(tmp_path, tmp_path / "out", text))
    quick, victim = spec.cells
    checkpoint = api.RunPaths(victim.folder, "lenet5", "random", 0, sweep.RESULT_NAME).checkpoint
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        worker = threading.Thread(target=lambda: summaries.append(sweep.run_sweep(spec, max_parallel=2,
                                                                                  use_ray=True)))
        summaries: list[dict] = []
        worker.start()
        deadline = time.time() + 60
        while not checkpoint.is_file() and time.time() < deadline:
            time.sleep(0.05)
        os.kill(json.loads((victim.folder / sweep.STATUS_NAME).read_text())["pid"], signal.SIGKILL)
        worker.join()
        assert list(summaries[0]["failed"]) == [victim.name] and sweep.finished(victim) is None
        mtime = quick.result_path.stat().st_mtime_ns
        rerun = sweep.run_sweep(spec, max_parallel=2, use_ray=True)
    finally:
        ray.shutdown()
    assert rerun["ran"] == 1 and rerun["failed"] == {} and quick.result_path.stat().st_mtime_ns == mtime
    fresh = sweep.load_spec(write_spec(tmp_path / "fresh", tmp_path / "fresh_out", text))
    assert sweep.run_sweep(sweep.Spec(fresh.source, fresh.output, fresh.cells[1:]), use_ray=False)["failed"] == {}
    assert outcome(sweep.finished(victim)) == outcome(sweep.finished(fresh.cells[1]))
