"""The one search job: prepare -> evaluator -> run -> select on val -> (optional) test -> result.

Every entry point (the CLI modes, the comparison benchmark, sweeps, notebooks through
:mod:`triseg.api`) runs searches through these functions, so a setting means the same everywhere
and the test split is opened only by :func:`evaluate_test` (skipped with ``no_test``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from triseg import quant
from triseg.approx.config import TrisegConfig, config_path
from triseg.approx.intsim import simulate
from triseg.artifacts import write_json
from triseg.data import CIFAR10_CLASSES, Cifar10, Split, load_cifar10
from triseg.analysis.sensitivity import search_output_dir
from triseg.artifacts import resume_from
from triseg.errors import TrisegError
from triseg.hardware.cost import HardwareReport, count
from triseg.hardware.energy import DEFAULT_TABLE, load_table
from triseg.jobs import DataOptions, FinalTestConfig, SearchConfig, SpaceOptions, SupervisedJobConfig
from triseg.models import model_class
from triseg.paths import check_output_dir, check_output_file
from triseg.runlog import set_threads, tensorboard_writer
from triseg.search import space as space_mod
from triseg.search.base import EpisodeBatches, Evaluator, ParetoArchive, Score, Strategy, TopK
from triseg.search.registry import build_strategy, strategy_spec
from triseg.search.result import RunPaths, SearchResult, Validation
from triseg.search.run import SearchSettings, run_search as run_loop
from triseg.search.select import (counted_eval, coverage_on, coverage_section, evaluate_on_test,
                                  select_on_validation, select_savings, teacher_on_validation)
from triseg.search.space import SearchSpace
from triseg.search.supervised import train_supervised
from triseg.teacher import Teacher, load_result_teacher, load_teacher

StrategyWrapper = Callable[[Strategy], Strategy]


@dataclass
class SearchRun:
    """What a search job produced: the result (None when ``stop_after`` ended it early) and its files."""

    result: SearchResult | None
    paths: RunPaths
    episodes_done: int


def load_data(opts: DataOptions) -> Cifar10:
    """The CIFAR-10 splits named by the data options; an error unless they have the models' classes."""
    return load_cifar10(opts.data_dir, val_size=opts.val_size, download=opts.download,
                        expect_classes=CIFAR10_CLASSES)


def teacher_for(cfg: SearchConfig | SupervisedJobConfig | FinalTestConfig) -> Teacher:
    """The INT8 teacher a job's settings name."""
    return load_teacher(cfg.model, cfg.output_dir, cfg.engine, cfg.device, cfg.backend)


def build_space(teacher: Teacher, data: Cifar10, opts: SpaceOptions, batch_size: int, seed: int) -> SearchSpace:
    """Calibrate on training batches and apply the tmax rule; an error when no layer is left."""
    if len(data.train) < batch_size:
        raise TrisegError(f"training split has {len(data.train)} images, fewer than --batch-size {batch_size}")
    torch.manual_seed(seed)
    space = space_mod.build_space(teacher.model, data.train, opts.calib_batches, batch_size, teacher.top_code,
                                  seed=seed, tmax_percentile=opts.tmax_percentile, tmax_margin=opts.tmax_margin,
                                  dynamic=opts.dynamic_tmax)
    if not space.layers:
        raise TrisegError(f"no layer of {teacher.name} can be approximated (every tmax < 10)")
    return space


def make_evaluator(teacher: Teacher, data: Cifar10, cfg: SearchConfig) -> Evaluator:
    """The reward of the job's settings on seeded training batches (teacher outputs cached)."""
    model = teacher.model
    attention = [model.tap_name(layer) for layer in model.ATTENTION_LAYERS]
    train, batch_size = data.train, cfg.batch_size
    if cfg.episode_images:
        if len(train) < cfg.episode_images:
            raise TrisegError(f"training split has {len(train)} images, fewer than --episode-images "
                              f"{cfg.episode_images}")
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.episode_images]
        train, batch_size = Split(train.x[pick], train.y[pick]), cfg.episode_images
    batches = EpisodeBatches(model, train, batch_size, attention, seed=cfg.seed)
    return Evaluator(model, batches, T=cfg.kd_T, attention_weight=cfg.attention_weight, objective=cfg.objective,
                     savings_weight=cfg.savings_weight)


def _check_data(data: Cifar10, no_test: bool) -> None:
    if len(data.val) == 0:
        raise TrisegError("the validation split is empty: selection needs --val-size of at least 1")
    if not no_test and len(data.test) == 0:
        raise TrisegError("the test split is empty: pass --no-test or a data set with a test split")


def run_search(cfg: SearchConfig, teacher: Teacher | None = None, data: Cifar10 | None = None,
               space: SearchSpace | None = None, wrap: StrategyWrapper | None = None) -> SearchRun:
    """Run one search job with ``cfg``; teacher, data and space are loaded/calibrated unless given.

    ``wrap`` may wrap the strategy (e.g. to snapshot its best config); the result JSON and the history
    are written under ``cfg.output_dir`` (:class:`RunPaths`).
    """
    set_threads(cfg.workers)
    spec = strategy_spec(cfg.search)
    table = energy_table(cfg.cost_table)
    paths = RunPaths(Path(cfg.output_dir), cfg.model, cfg.search, cfg.seed, cfg.result_file)
    for f in (paths.result, paths.history, paths.checkpoint):
        check_output_file(f)
    check_output_dir(paths.log_dir)
    resume_from(paths.checkpoint, cfg.resume, cfg.resume_or_start)
    teacher = teacher or teacher_for(cfg)
    data = data or load_data(cfg)
    _check_data(data, cfg.no_test)
    space = space or build_space(teacher, data, cfg.space, cfg.batch_size, cfg.seed)
    evaluator = make_evaluator(teacher, data, cfg)
    strategy = build_strategy(space, cfg)
    if wrap is not None:
        strategy = wrap(strategy)
    episodes = cfg.episodes if spec.max_evaluations is None else min(cfg.episodes, spec.max_evaluations)
    settings = SearchSettings(episodes=episodes, top_k=cfg.top_k, max_acc_drop=cfg.max_acc_drop,
                              eval_every=min(cfg.eval_every, episodes), checkpoint_every=cfg.checkpoint_every,
                              stop_after=cfg.stop_after, objective=cfg.objective, score_batch=cfg.score_batch)
    outcome = run_loop(strategy, evaluator, settings, paths.checkpoint, paths.log_dir, resume=cfg.resume,
                       resume_or_start=cfg.resume_or_start)
    if not outcome.finished:
        return SearchRun(None, paths, len(outcome.history))
    write_json(outcome.history, paths.history)
    savings = ({"objective": "savings", "savings_weight": cfg.savings_weight, "safety_margin": cfg.safety_margin,
                "margin_risk": cfg.margin_risk, "race": cfg.race, "dynamic_tmax": cfg.space.dynamic_tmax}
               if cfg.objective == "savings" else {})
    result = select_result(teacher, data, outcome.top, cfg.max_acc_drop, cfg.no_test, {
        **savings, "search": cfg.search, "episodes": episodes, "student_evaluations": evaluator.evaluations,
        "attention_weight": cfg.attention_weight, "tmax": space.tmax, "skipped_layers": space.skipped,
        "search_wall_time_s": round(outcome.wall_time, 1), "history_file": paths.history.name,
        "tmax_rule": {"percentile": cfg.space.tmax_percentile, "margin": cfg.space.tmax_margin},
        "best_reward": max(h["reward"] for h in outcome.history),
        **_common_settings(cfg, data), "kd_T": cfg.kd_T,
    }, table)
    result.write(paths.result)
    return SearchRun(result, paths, len(outcome.history))


def run_supervised(cfg: SupervisedJobConfig, teacher: Teacher | None = None, data: Cifar10 | None = None,
                   space: SearchSpace | None = None) -> SearchRun:
    """The gradient-based method, selected on val (and tested) exactly like a search."""
    set_threads(cfg.workers)
    table = energy_table(cfg.cost_table)
    paths = RunPaths(Path(cfg.output_dir), cfg.model, "supervised", cfg.seed, cfg.result_file)
    for f in (paths.result, paths.supervised_history):
        check_output_file(f)
    check_output_dir(paths.log_dir)
    teacher = teacher or teacher_for(cfg)
    data = data or load_data(cfg)
    _check_data(data, cfg.no_test)
    space = space or build_space(teacher, data, cfg.space, cfg.batch_size, cfg.seed)
    sim = teacher.model if teacher.device == "cuda" else simulate(teacher.model)
    writer = tensorboard_writer(paths.log_dir)
    t0 = time.time()
    s = cfg.supervised
    try:
        outcome = train_supervised(sim, space, data.train, s, batch_size=cfg.batch_size, kd_T=cfg.kd_T,
                                   seed=cfg.seed, writer=writer, teacher=teacher.model)
    except TrisegError:
        writer.discard()
        raise
    writer.close()
    train_time = time.time() - t0
    top = TopK(len(outcome.epoch_configs))
    for epoch, config in enumerate(outcome.epoch_configs, 1):  # later epochs rank first among equals on val
        top.add(config, Score(float(epoch), 0.0, 0.0), epoch)
    history = paths.supervised_history
    write_json({"settings": {**s.to_dict(), "batch_size": cfg.batch_size, "kd_T": cfg.kd_T, "seed": cfg.seed},
                 "initial_tmax_rule": space.tmax,
                 "epoch_configs": [{k: vars(c) for k, c in config.items()} for config in outcome.epoch_configs],
                 "history": outcome.history}, history)
    result = select_result(teacher, data, top, cfg.max_acc_drop, cfg.no_test, {
        "search": "supervised", "epochs": s.epochs, "gradient_steps": outcome.steps, "student_evaluations": 0,
        "alpha": s.alpha, "lr": s.lr, "beta0": s.beta0, "round_grad": s.round_grad, "tmax_mode": s.tmax,
        "search_wall_time_s": round(train_time, 1), "history_file": history.name,
        "tmax_rule": {"percentile": cfg.space.tmax_percentile, "margin": cfg.space.tmax_margin},
        **_common_settings(cfg, data), "kd_T": cfg.kd_T,
    }, table)
    result.write(paths.result)
    return SearchRun(result, paths, outcome.steps)


def _common_settings(cfg: SearchConfig | SupervisedJobConfig, data: Cifar10) -> dict[str, Any]:
    return {"seed": cfg.seed, "batch_size": cfg.batch_size, "calib_batches": cfg.space.calib_batches,
            "max_acc_drop": cfg.max_acc_drop, "data": data.source,
            "split_sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}


def energy_table(path: str | None) -> dict[str, Any]:
    """The energy table of ``--cost-table``, else the default estimate."""
    return DEFAULT_TABLE if path is None else load_table(path)


def select_result(teacher: Teacher, data: Cifar10, top: TopK | ParetoArchive, max_acc_drop: float, no_test: bool,
                  settings: dict[str, Any], cost_table: dict[str, Any] | None = None) -> SearchResult:
    """Select on validation, then evaluate the chosen config on test unless ``no_test``.

    The result's ``coverage`` and ``hardware`` sections are counted on the split evaluated last.
    """
    t0 = time.time()
    table = cost_table or DEFAULT_TABLE
    extra: dict[str, Any] = {}
    savings = settings.get("objective") == "savings"
    # The teacher's one pass over val, shared by the selection and the val hardware report.
    teacher_val = teacher_on_validation(teacher.model, data.val) if savings or no_test else None
    if savings:
        chosen, extra["pareto_front"] = select_savings(teacher.model, data.val, top.best(), max_acc_drop,
                                                       settings["safety_margin"], teacher=teacher_val,
                                                       risk=settings.get("margin_risk"),
                                                       race=settings.get("race", False))
        if chosen.margin_check is not None:
            extra["margin_check"] = chosen.margin_check
    else:
        chosen = select_on_validation(teacher.model, data.val, top, max_acc_drop, teacher=teacher_val)
    result = SearchResult(teacher.name, teacher.backend, chosen.config, chosen.reason, chosen.validation,
                          {}, None, {**settings, **extra, "teacher": teacher.identity(chosen.validation.acc_teacher)})
    if no_test:  # one more pass of the chosen config over val: its coverage, and its counts unless selected on them
        if chosen.counts is None:
            student = count(teacher.model, chosen.config, data.val, coverage=True)
            result.coverage = coverage_section(counted_eval(student, data.val), "val")
        else:
            student = chosen.counts
            result.coverage = coverage_on(teacher.model, chosen.config, data.val, 256, "val")
        result.settings["hardware"] = HardwareReport("val", student.images, student, teacher_val, table).to_json()
    else:
        evaluate_test(result, teacher, data, cost_table=table)
    result.settings["selection_wall_time_s"] = round(time.time() - t0, 1)
    return result


def evaluate_test(result: SearchResult, teacher: Teacher, data: Cifar10, batch_size: int = 256,
                  cost_table: dict[str, Any] | None = None, allow_other: bool = False) -> SearchResult:
    """The explicit, single test evaluation of a selected result (in place; an error if already tested).

    Also counts the hardware cost on test (with ``cost_table``, else the result's own table, else the default).
    """
    if result.test is not None:
        raise TrisegError("this result was already evaluated on the test split (once is the protocol)")
    if len(data.test) == 0:
        raise TrisegError("the test split is empty")
    recorded = result.settings.get("teacher", {}).get("sha256")
    if recorded is not None and recorded != teacher.sha256 and not allow_other:
        raise TrisegError(f"the result was searched on another teacher (sha256 {recorded[:12]}..., "
                          f"loaded {teacher.path} has {teacher.sha256[:12]}...)")
    table = cost_table or result.settings.get("hardware", {}).get("energy_table") or DEFAULT_TABLE
    result.test, result.coverage, report = evaluate_on_test(teacher.model, result.config, data.test, batch_size, table)
    result.settings["hardware"] = report.to_json()
    return result


def final_test(cfg: FinalTestConfig) -> SearchResult:
    """``final_test``: read a result selected with ``no_test``, test it once, write it back in place."""
    set_threads(cfg.workers)
    table = None if cfg.cost_table is None else load_table(cfg.cost_table)
    result = SearchResult.read(cfg.config_path)
    if result.test is not None:
        raise TrisegError(f"result {cfg.config_path} was already evaluated on the test split")
    source = config_path(cfg.config_path)
    check_output_file(source)
    teacher, _, other = load_result_teacher(cfg.config_path, cfg.model, cfg.output_dir,
                                            search_output_dir(source, None), cfg.engine, cfg.device, cfg.backend,
                                            cfg.allow_other_teacher)
    evaluate_test(result, teacher, load_data(cfg), cfg.batch_size, cost_table=table, allow_other=other is not None)
    if other:
        result.settings["other_teacher"] = other
    result.write(source)
    return result



def pareto_front(result: SearchResult, source: str) -> list[dict[str, Any]]:
    """The validated Pareto front of a savings result; an error for other results."""
    front = result.settings.get("pareto_front")
    if not isinstance(front, list) or not front:
        raise TrisegError(f"result {source} has no Pareto front (search with --objective savings)")
    return front


def pick_pareto_point(result: SearchResult, index: int, source: str) -> SearchResult:
    """Point ``index`` of the front as a result of its own: selected on validation, test not opened."""
    front = pareto_front(result, source)
    if index >= len(front):
        raise TrisegError(f"--pick {index}: the front of {source} has {len(front)} points (0-{len(front) - 1})")
    point = front[index]
    config = TrisegConfig.from_json({"layers": point["layers"], "model": result.model, "backend": result.backend},
                                    f"{source} (Pareto point {index})").validate(
        model_class(result.model).layers(), quant.activation_top_code(result.backend)).layers
    validation = Validation(result.validation.acc_teacher, point["val_acc"], point["val_drop"], [])
    settings = {k: v for k, v in result.settings.items() if k not in ("pareto_front", "hardware")}
    return SearchResult(result.model, result.backend, config,
                        f"pareto point {index} of {source} (val drop={point['val_drop']:.2f}%, multiplies left "
                        f"{point['multiplies_left']:.3f})", validation, {}, None,
                        {**settings, "picked_from": source, "pareto_index": index})
