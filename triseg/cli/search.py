"""Modes of the tri-segment search: search / train_ppo_triseg, eval_ppo_int8, pareto and final_test."""

from __future__ import annotations

import sys
from pathlib import Path

from triseg.analysis.sensitivity import search_output_dir
from triseg.approx.config import TrisegConfig, config_path
from triseg.artifacts import write_json
from triseg.cli.common import prepare
from triseg.cli.modes import Mode
from triseg.errors import TrisegError
from triseg.jobs import EvalConfig, FinalTestConfig, ParetoConfig, SearchConfig
from triseg.paths import check_output_file
from triseg.search.job import (SearchRun, energy_table, final_test, load_data, pareto_front, pick_pareto_point,
                               run_search)
from triseg.search.result import RESULT_DIR, SearchResult
from triseg.search.select import evaluate_on_test
from triseg.teacher import load_result_teacher


def report_run(run: SearchRun) -> None:
    """Print the outcome of a search job (or how to continue one that stopped early)."""
    for layer, reason in (run.result.settings.get("skipped_layers", {}) if run.result else {}).items():
        print(f"note: layer {layer} left unapproximated: {reason}", file=sys.stderr)
    if run.result is None:
        print(f"stopped after {run.episodes_done} episodes; rerun with --resume to continue ({run.paths.checkpoint})")
        return
    print(f"{run.result.summary()} -> {run.paths.result}")


def search(cfg: SearchConfig) -> None:
    report_run(run_search(cfg))


def eval_ppo_int8(cfg: EvalConfig) -> None:
    prepare(cfg)
    out = check_output_file(Path(cfg.output_dir) / RESULT_DIR / f"{config_path(cfg.config_path).stem}.eval.json")
    teacher, tcfg, other = load_result_teacher(cfg.config_path, cfg.model, cfg.output_dir,
                                               search_output_dir(config_path(cfg.config_path), None), cfg.engine,
                                               cfg.device, cfg.backend, cfg.allow_other_teacher)
    data = load_data(cfg)
    model, be = teacher.model, teacher.backend
    metrics, coverage, report = evaluate_on_test(model, tcfg.layers, data.test, cfg.batch_size,
                                                 energy_table(cfg.cost_table))
    drop = metrics.acc_drop
    print(f"{cfg.model} ({be}) on {len(data.test)} test images: teacher {metrics.acc_teacher:.2f}% "
          f"student {metrics.acc_student:.2f}% drop {drop:.2f} points")
    print(f"{'layer':<14}{'t1':>4}{'v1':>4}{'t2':>4}{'v2':>4}{'tmax':>5}{'changed':>9}{'zeroed':>8}")
    for layer, c in tcfg.layers.items():
        cov = coverage["layers"][layer]
        print(f"{layer:<14}{c.t1:>4}{c.v1:>4}{c.t2:>4}{c.v2:>4}{c.tmax:>5}"
              f"{cov['changed_share']:>9.3f}{cov['zeroed_share']:>8.3f}")
    hardware = report.to_json()
    print_hardware(hardware)
    write_json({"model": cfg.model, "backend": be, "config": cfg.config_path, "images": len(data.test),
                "teacher": teacher.identity(), **({"other_teacher": other} if other else {}),
                "acc_teacher": metrics.acc_teacher, "acc_student": metrics.acc_student, "acc_drop": drop,
                "top1_agreement": metrics.top1_agreement,
                "coverage": coverage["layers"], "mapped_share": coverage["mapped_share"], "hardware": hardware}, out)
    print(f"-> {out}")


def print_hardware(hardware: dict) -> None:
    """The cost model's per-layer table and totals."""
    print(f"{'conv/linear input':<22}{'source':<10}{'MACs/img':>11}{'skipped':>9}{'selected':>9}{'multiplied':>11}")
    for name, c in hardware["layers"].items():
        print(f"{name:<22}{c['source'] or '-':<10}{c['macs_per_image']:>11.0f}{c['skipped_share']:>9.3f}"
              f"{c['selected_share']:>9.3f}{c['multiplied_share']:>11.3f}")
    t = hardware["totals"]
    e = t["energy_estimate_pj_per_image"]
    print(f"multiplies left: {t['multiplies_left_vs_zero_skipping_int8']:.3f} of zero-skipping INT8, "
          f"{t['multiplies_left_vs_dense_int8']:.3f} of dense INT8; energy estimate {e['ratio']:.3f} of "
          f"zero-skipping INT8 ({e['student'] / 1e6:.3f} uJ/image; {hardware['energy_table']['source']})")


def final_test_mode(cfg: FinalTestConfig) -> None:
    result = final_test(cfg)
    print(f"{result.summary()} -> {config_path(cfg.config_path)}")


def pareto(cfg: ParetoConfig) -> None:
    result = SearchResult.read(cfg.config_path)
    front = pareto_front(result, cfg.config_path)
    chosen = result.config
    print(f"{'#':>3} {'val drop':>9} {'multiplies left':>16} {'val acc':>8} {'episode':>8}")
    for i, p in enumerate(front):
        mark = "  <- selected" if TrisegConfig.from_json({**p, "model": result.model, "backend": result.backend},
                                                          cfg.config_path).layers == chosen else ""
        print(f"{i:>3} {p['val_drop']:>9.2f} {p['multiplies_left']:>16.3f} {p['val_acc']:>8.2f} "
              f"{p['episode']:>8}{mark}")
    if cfg.pick is None:
        return
    source = config_path(cfg.config_path)
    out = source.parent / (cfg.output or f"{source.stem}.pareto{cfg.pick}.json")
    if out.resolve() == source.resolve():
        raise TrisegError(f"--output {cfg.output} would overwrite the result itself")
    check_output_file(out)
    picked = pick_pareto_point(result, cfg.pick, cfg.config_path)
    picked.write(out)
    print(f"point {cfg.pick}: {picked.selection} -> {out} (evaluate it once with final_test)")


SEARCH_HELP = "search tri-segment maps (PPO by default) -> tri_ppo_int_codes/<result-file>"
MODES = [
    Mode("train_ppo_triseg", SEARCH_HELP, SearchConfig, search),
    Mode("search", "alias of train_ppo_triseg", SearchConfig, search),
    Mode("eval_ppo_int8", "test accuracy of the INT8 model with a config's maps, and per-layer coverage", EvalConfig,
         eval_ppo_int8),
    Mode("pareto", "print a savings result's Pareto front (validation drop vs multiplies left); --pick N writes "
         "one point as a result", ParetoConfig, pareto),
    Mode("final_test", "evaluate a result selected with --no-test once on the test split (written in place)",
         FinalTestConfig, final_test_mode),
]
