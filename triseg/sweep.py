"""Experiment grids: every cell one search job through :mod:`triseg.api`, in-process or as Ray tasks.

A spec (TOML; YAML when PyYAML is installed) names the grid and an output folder::

    output = "results/sweep/lenet5"
    models = ["lenet5"]
    strategies = ["random", "cmaes"]
    seeds = [0, 1, 2]
    objectives = ["reward"]          # default ["reward"]
    tmax = ["p90+10"]                # tmax rules: "p<percentile>+<margin>" or "dynamic"; default ["p90+10"]
    budgets = [1000]                 # student evaluations per cell
    options = ["--batch-size", "32"] # shared search options, as the CLI spells them
    teacher_dir = "outputs"          # where the INT8 teachers are (the zoo is the fallback)

Each cell writes ``<output>/cells/<name>/`` (its result, history, checkpoint and ``cell.log``), selects on
validation and never opens the test split. A finished cell (its result JSON complete) is skipped on a
rerun, a killed one continues from its checkpoint, a failed one is recorded with its one-line error.
``--final-test`` evaluates, once, the best validation result of each (model, strategy, objective) group
on test: for the reward objective the lowest validation drop within the drop limit (ties: fewer
multiplies left), for the savings objective the fewest multiplies left within the limit; when no
result of the group is within the limit, the lowest validation drop.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shlex
import socket
import statistics
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm import tqdm

from triseg import api
from triseg.artifacts import atomic_write_text, write_json
from triseg.errors import TrisegError
from triseg.jobs import SearchConfig
from triseg.paths import read_json
from triseg.search.job import evaluate_test, load_data, run_search
from triseg.search.result import RunPaths, SearchResult
from triseg.teacher import load_teacher

RESULT_NAME = "result.json"
STATUS_NAME = "status.json"
LOG_NAME = "cell.log"
GRID_KEYS = ("models", "strategies", "seeds", "objectives", "tmax", "budgets")
SPEC_KEYS = ("output", "options", "teacher_dir", *GRID_KEYS)
SET_BY_SWEEP = ("--model", "--search", "--seed", "--objective", "--episodes", "--tmax-percentile", "--tmax-margin",
                "--dynamic-tmax", "--output-dir", "--result-file", "--no-test", "--resume", "--resume-or-start",
                "--stop-after")
TMAX_RULE = re.compile(r"^p(\d+(?:\.\d+)?)([+-]\d+)$")


@dataclass(frozen=True)
class Cell:
    """One grid point: its name, folder and the CLI spelling of its search options."""

    name: str
    folder: Path
    group: tuple[str, str, str]
    argv: tuple[str, ...]
    teacher_dir: str

    def config(self) -> SearchConfig:
        """The cell's checked search settings (a bad shared option: a one-line error)."""
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                return api.parse_options(SearchConfig, list(self.argv), prog="options")
        except SystemExit:
            raise TrisegError(" ".join(said.getvalue().removeprefix("error: ").split())) from None

    @property
    def result_path(self) -> Path:
        return RunPaths(self.folder, "", "", 0, RESULT_NAME).result


@dataclass(frozen=True)
class Spec:
    """A parsed sweep spec: the output folder and every cell."""

    source: Path
    output: Path
    cells: tuple[Cell, ...]


def _load_file(path: Path) -> dict[str, Any]:
    """The spec file's table; a one-line error for a malformed one."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise TrisegError(f"sweep spec {path} cannot be read ({type(exc).__name__})") from None
    if suffix == ".toml":
        try:
            obj: Any = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise TrisegError(f"sweep spec {path} is not valid TOML ({exc})") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TrisegError(f"sweep spec {path}: YAML needs PyYAML (pip install pyyaml), or write the spec "
                              "as TOML") from None
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TrisegError(f"sweep spec {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    else:
        raise TrisegError(f"sweep spec {path} must be a .toml, .yaml or .yml file")
    if not isinstance(obj, dict):
        raise TrisegError(f"sweep spec {path} must be a table of keys ({', '.join(SPEC_KEYS)})")
    return obj


def _list(obj: dict[str, Any], key: str, kind: type, source: Path, default: list[Any] | None = None) -> list[Any]:
    value = obj.get(key, default)
    if value is None:
        raise TrisegError(f"sweep spec {source}: {key} is required (a list)")
    if not isinstance(value, list) or not value or not all(isinstance(v, kind) and not isinstance(v, bool)
                                                           for v in value):
        raise TrisegError(f"sweep spec {source}: {key} must be a non-empty list of {kind.__name__}s, got {value!r}")
    if len(set(value)) != len(value):
        raise TrisegError(f"sweep spec {source}: {key} lists a value twice: {value!r}")
    return value


def tmax_options(rule: str, source: Path) -> list[str]:
    """The search options of a tmax rule: ``p<percentile>+<margin>`` or ``dynamic``."""
    if rule == "dynamic":
        return ["--dynamic-tmax"]
    m = TMAX_RULE.match(rule)
    if m is None:
        raise TrisegError(f"sweep spec {source}: tmax rule {rule!r} must be p<percentile>+<margin> (e.g. p90+10) "
                          "or dynamic")
    return ["--tmax-percentile", m.group(1), "--tmax-margin", m.group(2)]


def load_spec(path: str | Path) -> Spec:
    """Parse and check a spec: every cell's settings are built (and checked) before any cell starts."""
    source = Path(path)
    obj = _load_file(source)
    unknown = sorted(set(obj) - set(SPEC_KEYS))
    if unknown:
        raise TrisegError(f"sweep spec {source}: unknown keys {', '.join(unknown)} (known: {', '.join(SPEC_KEYS)})")
    output = obj.get("output")
    if not isinstance(output, str) or not output.strip():
        raise TrisegError(f"sweep spec {source}: output (the sweep's folder) is required")
    teacher_dir = obj.get("teacher_dir", "outputs")
    if not isinstance(teacher_dir, str) or not teacher_dir:
        raise TrisegError(f"sweep spec {source}: teacher_dir must be a folder name")
    shared = obj.get("options", [])
    shared = shlex.split(shared) if isinstance(shared, str) else shared
    if not isinstance(shared, list) or not all(isinstance(v, str) for v in shared):
        raise TrisegError(f"sweep spec {source}: options must be a list of strings (CLI spellings)")
    taken = [o for o in shared if o.split("=")[0] in SET_BY_SWEEP]
    if taken:
        raise TrisegError(f"sweep spec {source}: options {', '.join(taken)} are set by the grid or the sweep")
    grid = {"models": _list(obj, "models", str, source), "strategies": _list(obj, "strategies", str, source),
            "seeds": _list(obj, "seeds", int, source), "objectives": _list(obj, "objectives", str, source, ["reward"]),
            "tmax": _list(obj, "tmax", str, source, ["p90+10"]), "budgets": _list(obj, "budgets", int, source)}
    out = Path(output)
    cells = []
    for model in grid["models"]:
        for strategy in grid["strategies"]:
            for objective in grid["objectives"]:
                for rule in grid["tmax"]:
                    for budget in grid["budgets"]:
                        for seed in grid["seeds"]:
                            name = f"{model}__{strategy}__{objective}__{rule}__b{budget}__seed{seed}"
                            folder = out / "cells" / name
                            argv = ("--workers", "1", *shared, "--model", model, "--search", strategy,
                                    "--objective", objective, *tmax_options(rule, source), "--episodes", str(budget),
                                    "--seed", str(seed), "--output-dir", str(folder), "--result-file", RESULT_NAME,
                                    "--no-test", "--resume-or-start")
                            cells.append(Cell(name, folder, (model, strategy, objective), argv, teacher_dir))
    for cell in cells:
        try:
            cell.config().check_paths()
        except TrisegError as exc:
            raise TrisegError(f"sweep spec {source}, cell {cell.name}: {exc}") from None
    return Spec(source, out, tuple(cells))


def finished(cell: Cell) -> SearchResult | None:
    """The cell's result when its JSON is present and complete, else None."""
    if not cell.result_path.is_file():
        return None
    try:
        return SearchResult.read(cell.result_path)
    except TrisegError:
        return None


def run_cell(cell: Cell, loader: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Run (or continue) one cell; its output goes to ``cell.log``. Returns its status record, which is also
    ``status.json`` (``running`` with the host and process id while it runs)."""
    t0 = time.time()
    cell.folder.mkdir(parents=True, exist_ok=True)
    running = {"cell": cell.name, "state": "running", "host": socket.gethostname(), "pid": os.getpid()}
    write_json(running, cell.folder / STATUS_NAME)
    status: dict[str, Any] = {"cell": cell.name}
    with open(cell.folder / LOG_NAME, "a") as log, contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        try:
            cfg = cell.config()
            teacher = load_teacher(cfg.model, cell.teacher_dir, cfg.engine, cfg.device, cfg.backend)
            run = run_search(cfg, teacher, (loader or load_data)(cfg))
            status["state"] = "done" if run.result is not None else "stopped"
            print(run.result.summary() if run.result else f"stopped after {run.episodes_done} episodes")
        except Exception as exc:  # a failed cell is recorded and does not stop the others
            status.update(state="failed", error=" ".join(f"{type(exc).__name__}: {exc}".split())[:300])
            print(f"error: {status['error']}")
    status["wall_time_s"] = round(time.time() - t0, 1)
    write_json(status, cell.folder / STATUS_NAME)
    return status


def _ray_cell(cell: Cell) -> dict[str, Any]:
    return run_cell(cell)


def _run_ray(cells: list[Cell], address: str | None, max_parallel: int | None, bar: tqdm) -> list[dict[str, Any]]:
    import ray

    if not ray.is_initialized():
        if address is not None:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        else:
            ray.init(num_cpus=max_parallel, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_cell)
    limit = max_parallel or max(1, int(ray.cluster_resources().get("CPU", 1)))
    running: dict[Any, Cell] = {}
    statuses, queue = [], list(cells)
    while queue or running:
        while queue and len(running) < limit:
            cell = queue.pop(0)
            running[task.remote(cell)] = cell
        done, _ = ray.wait(list(running), num_returns=1)
        cell = running.pop(done[0])
        try:
            statuses.append(ray.get(done[0]))
        except Exception as exc:  # the worker died (killed, out of memory): the cell resumes on a rerun
            error = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            statuses.append({"cell": cell.name, "state": "failed", "error": error})
        bar.update(1)
    return statuses


def ray_available() -> bool:
    """Whether Ray can be imported."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def run_sweep(spec: Spec, address: str | None = None, max_parallel: int | None = None, use_ray: bool | None = None,
              loader: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Run the cells not finished yet (Ray when installed, else one after another), then write the table.

    ``loader`` replaces :func:`triseg.search.job.load_data` in-process (tests); returns the sweep summary.
    """
    use_ray = ray_available() if use_ray is None else use_ray
    if address is not None and not use_ray:
        raise TrisegError("--address needs Ray: pip install -e \".[distributed]\"")
    todo = [c for c in spec.cells if finished(c) is None]
    print(f"sweep {spec.source}: {len(spec.cells)} cells, {len(spec.cells) - len(todo)} finished already, "
          f"{len(todo)} to run -> {spec.output}", file=sys.stderr)
    spec.output.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    with tqdm(total=len(todo), desc="cells", unit="cell", file=sys.stderr, disable=not todo) as bar:
        if use_ray and todo:
            statuses = _run_ray(todo, address, max_parallel, bar)
        else:
            if todo and not ray_available():
                print("note: Ray is not installed (pip install -e \".[distributed]\"): running the cells one after "
                      "another in-process", file=sys.stderr)
            statuses = []
            for cell in todo:
                statuses.append(run_cell(cell, loader))
                bar.update(1)
    failed = {s["cell"]: s["error"] for s in statuses if s["state"] == "failed"}
    for name, error in failed.items():
        print(f"cell {name} failed: {error}", file=sys.stderr)
    summary = {"spec": str(spec.source), "cells": len(spec.cells), "ran": len(todo), "failed": failed,
               "wall_time_s": round(time.time() - t0, 1), "ray": bool(use_ray and todo)}
    write_json(summary, spec.output / "sweep.json")
    write_table(spec)
    return summary


def _multiplies(result: SearchResult) -> float | None:
    hw = result.settings.get("hardware")
    return hw["totals"]["multiplies_left_vs_zero_skipping_int8"] if isinstance(hw, dict) else None


def best_of_group(results: list[tuple[Cell, SearchResult]]) -> tuple[Cell, SearchResult]:
    """The group's chosen result (see the module docstring for the rule)."""
    within = [(c, r) for c, r in results if r.validation.acc_drop <= float(r.settings.get("max_acc_drop", 2.0))]
    if not within:
        return min(results, key=lambda cr: cr[1].validation.acc_drop)
    inf = float("inf")
    if within[0][1].settings.get("objective") == "savings":
        return min(within, key=lambda cr: (_multiplies(cr[1]) or inf, cr[1].validation.acc_drop))
    return min(within, key=lambda cr: (cr[1].validation.acc_drop, _multiplies(cr[1]) or inf))


def final_test(spec: Spec, loader: Callable[[Any], Any] | None = None) -> list[Path]:
    """Evaluate each group's chosen result once on test: ``<output>/final/<model>__<strategy>__<objective>.json``."""
    groups: dict[tuple[str, str, str], list[tuple[Cell, SearchResult]]] = {}
    for cell in spec.cells:
        result = finished(cell)
        if result is not None:
            groups.setdefault(cell.group, []).append((cell, result))
    missing = [c.name for c in spec.cells if finished(c) is None]
    if missing:
        raise TrisegError(f"--final-test: {len(missing)} cells are not finished (first {missing[0]}): run the "
                          "sweep without --final-test first")
    written = []
    for group, results in groups.items():
        path = spec.output / "final" / ("__".join(group) + ".json")
        if path.is_file() and SearchResult.read(path).test is not None:
            continue
        cell, result = best_of_group(results)
        cfg = cell.config()
        teacher = load_teacher(cfg.model, cell.teacher_dir, cfg.engine, cfg.device, cfg.backend)
        evaluate_test(result, teacher, (loader or load_data)(cfg))
        result.settings["sweep_cell"] = cell.name
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(result.write(path))
    write_table(spec)
    return written


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± std`` over seeds (std 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def write_table(spec: Spec) -> Path:
    """``table.md`` (mean ± std over seeds per grid row; the final test per group) and ``best_so_far.png``."""
    rows: dict[str, list[tuple[Cell, SearchResult]]] = {}
    for cell in spec.cells:
        result = finished(cell)
        if result is not None:
            rows.setdefault(cell.name.rsplit("__seed", 1)[0], []).append((cell, result))
    head = ["cells (model, strategy, objective, tmax, budget)", "seeds", "val drop (pt)", "multiplies left (val)",
            "wall time (s)"]
    lines = [f"Sweep {spec.source.name}: mean ± std over seeds; drops in accuracy points on validation (lower is "
             "better)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, runs in sorted(rows.items(), key=lambda kv: statistics.mean(r.validation.acc_drop for _, r in kv[1])):
        left = [_multiplies(r) for _, r in runs]
        lines.append("| " + " | ".join([
            f"`{name}`", str(len(runs)), mean_std([r.validation.acc_drop for _, r in runs]),
            mean_std([v for v in left if v is not None], 3) if all(v is not None for v in left) else "n/a",
            mean_std([r.settings.get("search_wall_time_s", 0.0) + r.settings.get("selection_wall_time_s", 0.0)
                      for _, r in runs], 1)]) + " |")
    final = sorted((spec.output / "final").glob("*.json")) if (spec.output / "final").is_dir() else []
    if final:
        lines += ["", "Final test: each (model, strategy, objective) group's chosen cell, evaluated once", "",
                  "| group | chosen cell | val drop (pt) | test drop (pt) | multiplies left (test) |",
                  "|---|---|---|---|---|"]
        for path in final:
            r = SearchResult.read(path)
            test = "n/a" if r.test is None else f"{r.test.acc_drop:.2f}"
            left = _multiplies(r)
            lines.append(f"| `{path.stem}` | `{r.settings.get('sweep_cell', '?')}` | {r.validation.acc_drop:.2f} | "
                         f"{test} | {'n/a' if left is None else f'{left:.3f}'} |")
    path = spec.output / "table.md"
    atomic_write_text("\n".join(lines) + "\n", path)
    if rows:
        plot(spec, rows)
    return path


def plot(spec: Spec, rows: dict[str, list[tuple[Cell, SearchResult]]]) -> Path:
    """Best-so-far episode reward (training batches) against student evaluations, mean over seeds per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in rows.items():
        curves = []
        for cell, _ in runs:
            path = RunPaths(cell.folder, "", "", 0, RESULT_NAME).history
            if not path.is_file():
                continue
            history = read_json(path, "history")
            best, curve = float("-inf"), []
            for h in history:
                best = max(best, h["reward"])
                curve.append(best)
            curves.append(curve)
        if not curves:
            continue
        n = min(len(c) for c in curves)
        ax.plot(range(1, n + 1), [statistics.mean(c[i] for c in curves) for i in range(n)], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("student evaluations")
    ax.set_ylabel("best-so-far reward (training batches)")
    ax.set_title(f"sweep {spec.source.name}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    path = spec.output / "best_so_far.png"
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
