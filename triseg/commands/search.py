"""Modes of the tri-segment search: train_ppo_triseg (any --search strategy) and eval_ppo_int8."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from triseg import artifacts, quant
from triseg.approx.config import TrisegConfig, config_path, load_config
from triseg.approx.intsim import simulate
from triseg.approx.student import evaluate_student
from triseg.cli import mode
from triseg.commands.common import backend, load_data, prepare, run_dir, write_json
from triseg.errors import TrisegError
from triseg.models import model_class
from triseg.runlog import resolve_device
from triseg.data import Cifar10
from triseg.search.base import EpisodeBatches, Evaluator, TopK
from triseg.search.registry import STRATEGIES, build_strategy
from triseg.search.run import SearchSettings, result_json, run_search, select_and_test
from triseg.search.space import SearchSpace, build_space

RESULT_DIR = "tri_ppo_int_codes"


def _search_args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(batch_size=32)
    p.add_argument("--search", default="ppo", help=f"strategy: {', '.join(STRATEGIES)} (default ppo)")
    p.add_argument("--episodes", type=int, default=500, help="student evaluations (the budget; default 500)")
    add_space_args(p)
    p.add_argument("--result-file", default="result.json", help="name of the result JSON (default result.json)")
    p.add_argument("--max-acc-drop", type=float, default=2.0, help="accuracy drop limit in points (default 2.0)")
    p.add_argument("--kd-T", type=float, default=2.0, help="KD temperature (default 2)")
    p.add_argument("--attention-weight", type=float, default=100.0, help="weight of the AT term (default 100)")
    p.add_argument("--top-k", type=int, default=30, help="configs kept for validation (default 30)")
    p.add_argument("--eval-every", type=int, default=100, help="log codes every N episodes (default 100)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="checkpoint every N episodes (default 100)")
    p.add_argument("--stop-after", type=int, default=None, help="stop (resumably) after N episodes")
    g = p.add_argument_group("PPO")
    g.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate (default 3e-4)")
    g.add_argument("--update-timestep", type=int, default=50, help="episodes per PPO update (default 50)")
    g.add_argument("--k-epochs", type=int, default=4, help="PPO epochs per update (default 4)")
    g.add_argument("--eps-clip", type=float, default=0.2, help="clip range (default 0.2)")
    g.add_argument("--gamma", type=float, default=0.99, help="discount (one-step episodes: no effect; default 0.99)")
    g.add_argument("--value-coef", type=float, default=0.5, help="value-loss coefficient (default 0.5)")
    g.add_argument("--entropy-coef", type=float, default=0.01, help="entropy coefficient (default 0.01)")
    g.add_argument("--warm-prob", type=float, default=0.8,
                   help="ppo-warm: per-code probability of the exact-MSE codes at the start (default 0.8)")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if value < 1:
            raise TrisegError(f"--{name.replace('_', '-')} must be at least 1, got {value}")


def load_student(args: argparse.Namespace) -> tuple[torch.nn.Module, str, str]:
    """The INT8 teacher (the student's base) on CPU, or its integer simulation on CUDA."""
    int8, be = artifacts.load_int8(args.output_dir, args.model, args.engine)
    backend(args, be)
    device = resolve_device(args.device)
    if device == "cuda":
        return simulate(int8).to(device), be, device
    return int8, be, device


def add_space_args(p: argparse.ArgumentParser) -> None:
    """Calibration options shared by every search and the supervised method."""
    p.add_argument("--calib-batches", type=int, default=16, help="training batches for the histograms (default 16)")
    p.add_argument("--tmax-percentile", type=float, default=90.0,
                   help="tmax = this percentile of the non-zero codes + --tmax-margin (default 90)")
    p.add_argument("--tmax-margin", type=int, default=10, help="added to the percentile for tmax (default 10)")


def prepare_search(args: argparse.Namespace) -> tuple[torch.nn.Module, str, str, Cifar10, SearchSpace]:
    """Student model, backend, device, data and the calibrated search space of a search command."""
    if args.calib_batches < 1:
        raise TrisegError(f"--calib-batches must be at least 1, got {args.calib_batches}")
    if not 0 < args.tmax_percentile <= 100:
        raise TrisegError(f"--tmax-percentile must be in (0, 100], got {args.tmax_percentile}")
    model, be, device = load_student(args)
    data = load_data(args)
    if len(data.train) < args.batch_size:
        raise TrisegError(f"training split has {len(data.train)} images, fewer than --batch-size {args.batch_size}")
    torch.manual_seed(args.seed)
    space = build_space(model, data.train, args.calib_batches, args.batch_size, quant.activation_top_code(be),
                        seed=args.seed, tmax_percentile=args.tmax_percentile, tmax_margin=args.tmax_margin)
    for layer, reason in space.skipped.items():
        print(f"note: layer {layer} left unapproximated: {reason}")
    if not space.layers:
        raise TrisegError(f"no layer of {args.model} can be approximated (every tmax < 10)")
    return model, be, device, data, space


@mode("train_ppo_triseg", "search tri-segment maps (PPO by default) -> tri_ppo_int_codes/<result-file>",
      _search_args)
def train_ppo_triseg(args: argparse.Namespace) -> None:
    prepare(args)
    _check_positive(episodes=args.episodes, top_k=args.top_k,
                    eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                    update_timestep=args.update_timestep)
    if args.search not in STRATEGIES:
        raise TrisegError(f"unknown search {args.search!r}; choose one of {', '.join(STRATEGIES)}")
    model, be, _, data, space = prepare_search(args)
    attention = [model.tap_name(layer) for layer in model.ATTENTION_LAYERS]
    episodes = EpisodeBatches(model, data.train, args.batch_size, attention, seed=args.seed)
    evaluator = Evaluator(model, episodes, T=args.kd_T, attention_weight=args.attention_weight)
    strategy = build_strategy(args.search, space, args)
    stem = Path(args.result_file).stem
    tag = f"{args.model}__{args.search}__{args.seed}__{stem}"
    settings = SearchSettings(episodes=args.episodes, top_k=args.top_k, max_acc_drop=args.max_acc_drop,
                              eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                              stop_after=args.stop_after)
    ckpt = Path(args.output_dir) / "checkpoints" / f"{tag}.search.ckpt"
    outcome = run_search(strategy, evaluator, settings, ckpt, run_dir(args, f"{args.search}__{stem}"),
                         resume=args.resume)
    if not outcome.finished:
        print(f"stopped after {len(outcome.history)} episodes; rerun with --resume to continue ({ckpt})")
        return
    history_path = write_json(outcome.history, Path(args.output_dir) / RESULT_DIR / f"{stem}.history.json")
    select_and_write(args, model, be, data, outcome.top, {
        "search": args.search, "episodes": args.episodes, "student_evaluations": evaluator.evaluations,
        "attention_weight": args.attention_weight, "tmax": space.tmax, "skipped_layers": space.skipped,
        "search_wall_time_s": round(outcome.wall_time, 1), "history_file": history_path.name,
        "tmax_rule": {"percentile": args.tmax_percentile, "margin": args.tmax_margin},
    })


def select_and_write(args: argparse.Namespace, model: torch.nn.Module, be: str, data: Cifar10, top: TopK,
                     extra: dict) -> Path:
    """Validate the top-k, test the chosen config once, write the result JSON and print a summary."""
    t0 = time.time()
    chosen = select_and_test(model, data, top, args.max_acc_drop)
    result = result_json(args.model, be, chosen, {
        **extra, "seed": args.seed, "batch_size": args.batch_size, "calib_batches": args.calib_batches,
        "kd_T": args.kd_T, "max_acc_drop": args.max_acc_drop, "selection_wall_time_s": round(time.time() - t0, 1),
        "data": data.source, "split_sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
    })
    path = write_json(result, Path(args.output_dir) / RESULT_DIR / args.result_file)
    m = result["metrics"]
    print(f"{args.model} {extra['search']}: {result['selection']}; test teacher {m['acc_teacher']:.2f}% "
          f"student {m['acc_student']:.2f}% drop {m['acc_drop']:.2f} points; "
          f"mapped share {result['coverage']['mapped_share']:.3f} -> {path}")
    return path


mode("search", "alias of train_ppo_triseg", _search_args)(train_ppo_triseg)


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(batch_size=256)
    p.add_argument("--config-path", required=True, help="result JSON of a search (Windows paths accepted)")


def checked_config(path: str, model_name: str, backend_name: str) -> TrisegConfig:
    """Load a config and check it against the model: name, layers and every rule."""
    cfg = load_config(path)
    if cfg.model != model_name:
        raise TrisegError(f"config {path} is for model {cfg.model}, not {model_name}")
    if cfg.backend != backend_name:
        raise TrisegError(f"config {path} is for backend {cfg.backend}, the INT8 model uses {backend_name}")
    if not cfg.layers:
        raise TrisegError(f"config {path} approximates no layer")
    return cfg.validate(model_class(model_name).layers(), quant.activation_top_code(backend_name))


@mode("eval_ppo_int8", "test accuracy of the INT8 model with a config's maps, and per-layer coverage", _eval_args)
def eval_ppo_int8(args: argparse.Namespace) -> None:
    prepare(args)
    model, be, _ = load_student(args)
    cfg = checked_config(args.config_path, args.model, be)
    data = load_data(args)
    teacher = evaluate_student(model, {}, data.test, args.batch_size)
    student = evaluate_student(model, cfg.layers, data.test, args.batch_size)
    drop = teacher.accuracy - student.accuracy
    print(f"{args.model} ({be}) on {len(data.test)} test images: teacher {teacher.accuracy:.2f}% "
          f"student {student.accuracy:.2f}% drop {drop:.2f} points")
    print(f"{'layer':<14}{'t1':>4}{'v1':>4}{'t2':>4}{'v2':>4}{'tmax':>5}{'changed':>9}{'zeroed':>8}")
    for layer, c in cfg.layers.items():
        cov = student.coverage[layer]
        print(f"{layer:<14}{c.t1:>4}{c.v1:>4}{c.t2:>4}{c.v2:>4}{c.tmax:>5}"
              f"{cov['changed_share']:>9.3f}{cov['zeroed_share']:>8.3f}")
    out = Path(args.output_dir) / RESULT_DIR / f"{config_path(args.config_path).stem}.eval.json"
    write_json({"model": args.model, "backend": be, "config": args.config_path, "images": len(data.test),
                "acc_teacher": teacher.accuracy, "acc_student": student.accuracy, "acc_drop": drop,
                "coverage": student.coverage, "mapped_share": student.mapped_share}, out)
    print(f"-> {out}")

