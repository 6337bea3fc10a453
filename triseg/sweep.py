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
    curve_points = 10                # best-so-far config scored on validation at ~10 log-spaced counts; default 0

Each cell writes ``<output>/cells/<name>/`` (its result, history, checkpoint and ``cell.log``), selects on
validation and never opens the test split. A finished cell (its result JSON complete) is skipped on a
rerun, a killed one continues from its checkpoint, a failed one is recorded with its one-line error.
``--final-test`` chooses, on validation, one grid row (tmax rule, budget) of each (model, strategy,
objective) group from its means over seeds: for the reward objective the lowest validation drop within
the drop limit (ties: fewer multiplies left), for the savings objective the fewest multiplies left
within the limit; when no row is within the limit, the lowest validation drop. Every seed of the
chosen row is then evaluated once on test, so the table shows test drops as mean ± std over seeds.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
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
from triseg.approx.student import Config, evaluate_student
from triseg.artifacts import atomic_write_text, write_json
from triseg.data import Split
from triseg.errors import TrisegError, first_line
from triseg.jobs import SearchConfig
from triseg.paths import read_json
from triseg.search.base import Score, Strategy
from triseg.search.job import energy_table, evaluate_test, load_data, run_search
from triseg.search.registry import STRATEGIES
from triseg.search.result import RunPaths, SearchResult
from triseg.teacher import Teacher, load_teacher

RESULT_NAME = "result.json"
STATUS_NAME = "status.json"
LOG_NAME = "cell.log"
CURVE_NAME = "best_so_far.json"
GRID_KEYS = ("models", "strategies", "seeds", "objectives", "tmax", "budgets")
SPEC_KEYS = ("output", "options", "teacher_dir", "curve_points", *GRID_KEYS)
MAX_CURVE_POINTS = 100
MAX_CELLS = 10_000  # a grid larger than this is a typo (each cell is a whole search job): split it into specs
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
    curve_points: int = 0

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

    @property
    def curve_path(self) -> Path:
        return self.folder / CURVE_NAME

    @property
    def row(self) -> str:
        """The grid row: the cell's name without its seed."""
        return self.name.rsplit("__seed", 1)[0]


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
        except RecursionError:
            raise TrisegError(f"sweep spec {path} is nested too deeply to be read") from None
    elif suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise TrisegError(f"sweep spec {path}: YAML needs PyYAML (pip install pyyaml), or write the spec "
                              "as TOML") from None
        try:
            obj = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise TrisegError(f"sweep spec {path} is not valid YAML ({first_line(exc)})") from None
        except RecursionError:
            raise TrisegError(f"sweep spec {path} is nested too deeply to be read") from None
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
    if Path(teacher_dir).exists() and not Path(teacher_dir).is_dir():
        raise TrisegError(f"sweep spec {source}: teacher_dir {teacher_dir} is a file, not a folder")
    shared = obj.get("options", [])
    try:
        shared = shlex.split(shared) if isinstance(shared, str) else shared
    except ValueError as exc:
        raise TrisegError(f"sweep spec {source}: options {shared!r} cannot be split into words ({exc})") from None
    if not isinstance(shared, list) or not all(isinstance(v, str) for v in shared):
        raise TrisegError(f"sweep spec {source}: options must be a list of strings (CLI spellings)")
    points = obj.get("curve_points", 0)
    if not isinstance(points, int) or isinstance(points, bool) or not 0 <= points <= MAX_CURVE_POINTS:
        raise TrisegError(f"sweep spec {source}: curve_points must be an integer in [0, {MAX_CURVE_POINTS}], "
                          f"got {points!r}")
    taken = [o for o in shared if o.split("=")[0] in SET_BY_SWEEP]
    if taken:
        raise TrisegError(f"sweep spec {source}: options {', '.join(taken)} are set by the grid or the sweep")
    grid = {"models": _list(obj, "models", str, source), "strategies": _list(obj, "strategies", str, source),
            "seeds": _list(obj, "seeds", int, source), "objectives": _list(obj, "objectives", str, source, ["reward"]),
            "tmax": _list(obj, "tmax", str, source, ["p90+10"]), "budgets": _list(obj, "budgets", int, source)}
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_CELLS:
        raise TrisegError(f"sweep spec {source}: its grid has {size:,} cells "
                          f"({' x '.join(str(len(v)) for v in grid.values())} {', '.join(grid)}), more than "
                          f"{MAX_CELLS:,}: split it into several specs")
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
                            cells.append(Cell(name, folder, (model, strategy, objective), argv, teacher_dir,
                                              points))
    for cell in cells:
        try:
            cell.config().check_paths()
        except TrisegError as exc:
            raise TrisegError(f"sweep spec {source}, cell {cell.name}: {exc}") from None
    return Spec(source, out, tuple(cells))


def finished(cell: Cell) -> SearchResult | None:
    """The cell's result when its JSON is present and complete (and its curve, when the spec asks for one),
    else None."""
    if not cell.result_path.is_file() or (cell.curve_points and read_curve(cell) is None):
        return None
    try:
        return SearchResult.read(cell.result_path)
    except TrisegError:
        return None


def read_curve(cell: Cell) -> list[dict[str, float]] | None:
    """The cell's best-so-far validation curve, or None when it has none (or a damaged one)."""
    if not cell.curve_path.is_file():
        return None
    try:
        curve = read_json(cell.curve_path, "best-so-far curve")
    except TrisegError:
        return None
    return curve if isinstance(curve, list) and all(isinstance(p, dict) for p in curve) else None


def log_points(budget: int, n: int) -> list[int]:
    """About ``n`` log-spaced evaluation counts from 1 to ``budget`` (``budget`` always included)."""
    return sorted({max(1, round(math.exp(i * math.log(budget) / max(1, n - 1)))) for i in range(n)} | {budget})


class BestSoFar:
    """Wraps a strategy and snapshots its best config by reward at the given evaluation counts; the
    snapshots travel with the strategy's state, so a resumed cell keeps them."""

    def __init__(self, inner: Strategy, points: list[int]) -> None:
        self.inner, self.name, self.points = inner, inner.name, set(points)
        self.best: tuple[float, Config] | None = None
        self.snapshots: dict[int, tuple[float, Config]] = {}

    def ask(self, episode: int) -> Config:
        return self.inner.ask(episode)

    def tell(self, episode: int, config: Config, score: Score) -> dict[str, float]:
        if self.best is None or score.reward > self.best[0]:
            self.best = (score.reward, dict(config))
        if episode + 1 in self.points:
            self.snapshots[episode + 1] = self.best
        return self.inner.tell(episode, config, score)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "best": self.best, "snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.best, self.snapshots = state["best"], state["snapshots"]


def score_curve(recorder: BestSoFar, teacher: Teacher, val: Split, acc_teacher: float) -> list[dict[str, float]]:
    """Each snapshot's validation drop (the test split is never touched)."""
    return [{"evaluations": n, "reward": reward,
             "val_drop": acc_teacher - evaluate_student(teacher.model, config, val).accuracy}
            for n, (reward, config) in sorted(recorder.snapshots.items())]


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
            data = (loader or load_data)(cfg)
            recorders: list[BestSoFar] = []
            limit = STRATEGIES[cfg.search].max_evaluations
            points = log_points(cfg.episodes if limit is None else min(cfg.episodes, limit), cell.curve_points)

            def wrap(strategy: Strategy) -> Strategy:
                recorders.append(BestSoFar(strategy, points))
                return recorders[-1]

            run = run_search(cfg, teacher, data, wrap=wrap if cell.curve_points else None)
            if run.result is not None and recorders:
                write_json(score_curve(recorders[-1], teacher, data.val, run.result.validation.acc_teacher),
                           cell.curve_path)
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
            # the cells are the user's job, not background work: run them at the driver's priority (Ray's
            # default worker niceness, 15, lets any niced process on the machine starve them)
            os.environ.setdefault("RAY_worker_niceness", "0")
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


Rows = dict[str, list[tuple[Cell, SearchResult]]]


def finished_rows(cells: tuple[Cell, ...] | list[Cell]) -> Rows:
    """The finished cells' results by grid row (cell name without the seed), in grid order."""
    rows: Rows = {}
    for cell in cells:
        result = finished(cell)
        if result is not None:
            rows.setdefault(cell.row, []).append((cell, result))
    return rows


def choose_row(rows: Rows) -> str:
    """The group's row chosen on validation from its means over seeds (see the module docstring)."""
    inf = float("inf")

    def val(name: str) -> float:
        return statistics.mean(r.validation.acc_drop for _, r in rows[name])

    def left(name: str) -> float:
        values = [_multiplies(r) for _, r in rows[name]]
        return inf if None in values else statistics.mean(v for v in values if v is not None)

    first = next(iter(rows.values()))[0][1]
    within = [name for name in rows if val(name) <= float(first.settings.get("max_acc_drop", 2.0))]
    if not within:
        return min(rows, key=val)
    if first.settings.get("objective") == "savings":
        return min(within, key=lambda name: (left(name), val(name)))
    return min(within, key=lambda name: (val(name), left(name)))


def final_path(spec: Spec, cell: Cell) -> Path:
    """Where ``--final-test`` writes a cell's tested result: ``<output>/final/<group>/<cell>.json``."""
    return spec.output / "final" / "__".join(cell.group) / f"{cell.name}.json"


def tested(spec: Spec, cell: Cell) -> SearchResult | None:
    """The cell's result as evaluated on test by ``--final-test``, else None."""
    path = final_path(spec, cell)
    if not path.is_file():
        return None
    result = SearchResult.read(path)
    return result if result.test is not None else None


def final_test(spec: Spec, loader: Callable[[Any], Any] | None = None) -> list[Path]:
    """Evaluate every seed of each group's chosen row once on test (the cells' own results stay untested);
    returns the files written (none for results tested already)."""
    missing = [c.name for c in spec.cells if finished(c) is None]
    if missing:
        raise TrisegError(f"--final-test: {len(missing)} cells are not finished (first {missing[0]}): run the "
                          "sweep without --final-test first")
    groups: dict[tuple[str, str, str], list[Cell]] = {}
    for cell in spec.cells:
        groups.setdefault(cell.group, []).append(cell)
    teachers: dict[tuple[Any, ...], Teacher] = {}
    datasets: dict[tuple[Any, ...], Any] = {}
    written = []
    for cells in groups.values():
        rows = finished_rows(cells)
        for cell, result in rows[choose_row(rows)]:
            if tested(spec, cell) is not None:
                continue
            cfg = cell.config()
            key = (cfg.model, cell.teacher_dir, cfg.engine, cfg.device, cfg.backend)
            if key not in teachers:
                teachers[key] = load_teacher(*key)
            if (cfg.data_dir, cfg.val_size) not in datasets:
                datasets[cfg.data_dir, cfg.val_size] = (loader or load_data)(cfg)
            evaluate_test(result, teachers[key], datasets[cfg.data_dir, cfg.val_size],
                          cost_table=energy_table(cfg.cost_table))
            result.settings["sweep_cell"] = cell.name
            written.append(result.write(final_path(spec, cell)))
    write_table(spec)
    return written


def mean_std(values: list[float], digits: int = 2) -> str:
    """``mean ± std`` over seeds (std 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {std:.{digits}f}"


def _stat(values: list[float | None], digits: int = 2, missing: str = "n/a") -> str:
    """:func:`mean_std`, or ``missing`` when a value is missing."""
    return missing if not values or None in values else mean_std([v for v in values if v is not None], digits)


def _wall_time(result: SearchResult) -> float:
    return result.settings.get("search_wall_time_s", 0.0) + result.settings.get("selection_wall_time_s", 0.0)


TABLE_HEAD = ["row (model, strategy, objective, tmax, budget)", "seeds", "evaluations", "val drop (pt)",
              "test drop (pt)", "best reward", "mapped share (val, %)", "multiplies left (val)",
              "multiplies left (test)", "wall time (s)"]


def table_row(name: str, runs: list[tuple[SearchResult, SearchResult | None]]) -> list[str]:
    """One grid row of the table from its (cell result, tested result or None) pairs, one pair per seed."""
    results = [r for r, _ in runs]
    tests = [t for _, t in runs]
    evaluations = sorted({r.settings.get("student_evaluations") for r in results}, key=str)
    rewards = [r.settings.get("best_reward") for r in results]
    return [f"`{name}`", str(len(runs)), "/".join(map(str, evaluations)),
            mean_std([r.validation.acc_drop for r in results]),
            _stat([None if t is None else t.test.acc_drop for t in tests], missing="not tested"),
            _stat(rewards, 4), _stat([100 * r.coverage["mapped_share"] if "mapped_share" in r.coverage else None
                                      for r in results]),
            _stat([_multiplies(r) for r in results], 3),
            _stat([None if t is None else _multiplies(t) for t in tests], 3, "not tested"),
            mean_std([_wall_time(r) for r in results], 1)]


def write_table(spec: Spec) -> Path:
    """``table.md``: per grid row, mean ± std over seeds of the validation drop, the test drop (rows chosen by
    ``--final-test``), best reward, mapped share, multiplies left and wall time; then the test drop of every
    tested seed. Also draws ``best_so_far.png``."""
    rows = finished_rows(spec.cells)
    table = {name: [(r, tested(spec, c)) for c, r in runs] for name, runs in rows.items()}
    lines = [f"Sweep {spec.source.name}: mean ± std over seeds; drops in accuracy points (lower is better), selection "
             "on validation; multiplies left: the cost model's real multiplies over zero-skipping INT8's (counted "
             "on the split named); wall time: search plus selection", "",
             "| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    order = sorted(table, key=lambda name: statistics.mean(r.validation.acc_drop for r, _ in table[name]))
    lines += ["| " + " | ".join(table_row(name, table[name])) + " |" for name in order]
    chosen = {name: runs for name, runs in rows.items() if any(t is not None for _, t in table[name])}
    if chosen:
        lines += ["", "Final test (`--final-test`): each (model, strategy, objective) group's row chosen on "
                  "validation, every seed evaluated once; test drop per seed, validation drop in brackets", "",
                  "| row | test drop per seed (val drop) |", "|---|---|"]
        for name, runs in chosen.items():
            seeds = [f"seed {c.name.rsplit('__seed', 1)[1]}: " + (
                "not tested" if t is None else f"{t.test.acc_drop:.2f} ({r.validation.acc_drop:.2f})")
                for (c, r), (_, t) in zip(runs, table[name])]
            lines.append(f"| `{name}` | {', '.join(seeds)} |")
    path = spec.output / "table.md"
    atomic_write_text("\n".join(lines) + "\n", path)
    if rows:
        plot(spec, rows)
    return path


def _band(ax: Any, xs: list[int], ys: list[list[float]], label: str, color: str, budget: int) -> None:
    """Mean over seeds with a min..max band; a single point (no search) as a constant over the budget."""
    style = "-"
    if len(xs) == 1:
        xs, ys, style = [1, budget], ys * 2, "--"
    ax.plot(xs, [statistics.mean(y) for y in ys], style, color=color, marker="o" if len(xs) < 30 else None, ms=3,
            label=label)
    ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=color, alpha=0.15)


def plot(spec: Spec, rows: Rows) -> Path:
    """Best-so-far reward (training batches) against student evaluations per row (mean over seeds, band
    min..max); beside it, when the spec sets ``curve_points``, the validation drop of the best-so-far config."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {name: f"C{i % 10}" for i, name in enumerate(rows)}
    histories: dict[str, list[list[float]]] = {name: [] for name in rows}
    for name, runs in rows.items():
        for cell, _ in runs:
            path = RunPaths(cell.folder, "", "", 0, RESULT_NAME).history
            if path.is_file():
                histories[name].append([h["best"] for h in read_json(path, "history")])
    budget = max([len(h) for hs in histories.values() for h in hs] + [1])
    curves = {name: [c for c in (read_curve(cell) for cell, _ in runs) if c] for name, runs in rows.items()}
    panels = 2 if any(curves.values()) else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4.5), squeeze=False)
    for name, hs in histories.items():
        if hs:
            n = min(len(h) for h in hs)
            _band(axes[0][0], list(range(1, n + 1)), [[h[i] for h in hs] for i in range(n)], name, colors[name],
                  budget)
    axes[0][0].set_ylabel("best-so-far reward (training batches)")
    if panels == 2:
        for name, cs in curves.items():
            if cs:
                n = min(len(c) for c in cs)
                _band(axes[0][1], [p["evaluations"] for p in cs[0][:n]],
                      [[c[i]["val_drop"] for c in cs] for i in range(n)], name, colors[name], budget)
        axes[0][1].set_ylabel("validation drop of the best-so-far config (points)")
    for ax in axes[0]:
        ax.set_xscale("log")
        ax.set_xlabel("student evaluations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(f"sweep {spec.source.name}: mean over seeds, band min..max", fontsize=10)
    fig.tight_layout()
    path = spec.output / "best_so_far.png"
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
