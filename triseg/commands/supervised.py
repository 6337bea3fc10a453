"""Mode train_supervised_triseg: the original tool's gradient-based method, in the search's output format."""

from __future__ import annotations

import argparse
import time
from pathlib import Path


from triseg.approx.intsim import simulate
from triseg.cli import mode
from triseg.commands.common import prepare, run_dir, write_json
from triseg.commands.search import RESULT_DIR, add_space_args, prepare_search, select_and_write
from triseg.errors import TrisegError
from triseg.runlog import tensorboard_writer
from triseg.search.base import Score, TopK
from triseg.search.supervised import SupervisedSettings, train_supervised


def _args(p: argparse.ArgumentParser) -> None:
    p.set_defaults(batch_size=128)
    p.add_argument("--epochs", type=int, default=5, help="passes over the training split (default 5)")
    p.add_argument("--steps-per-epoch", type=int, default=None, help="cap on batches per epoch (default: all)")
    p.add_argument("--lr", type=float, default=0.05, help="Adam learning rate, in codes (default 0.05)")
    p.add_argument("--alpha", type=float, default=0.05, help="weight of the coverage term (default 0.05)")
    p.add_argument("--beta0", type=float, default=1.0, help="initial gate temperature in codes (default 1)")
    p.add_argument("--beta-min", type=float, default=0.2, help="floor of the temperature (default 0.2)")
    p.add_argument("--beta-decay", type=float, default=0.85, help="temperature factor per epoch (default 0.85)")
    p.add_argument("--round-grad", choices=("ste", "none"), default="ste",
                   help="gradient of the simulation's rounding: straight-through (default) or none (zero)")
    p.add_argument("--tmax", choices=("learn", "fixed"), default="learn",
                   help="learn tmax from p90 (the original, default) or fix it at the search's p90 + 10")
    p.add_argument("--kd-T", type=float, default=2.0, help="KD temperature (default 2)")
    add_space_args(p)
    p.add_argument("--max-acc-drop", type=float, default=2.0, help="accuracy drop limit in points (default 2.0)")
    p.add_argument("--log-every", type=int, default=20, help="log gradients and codes every N steps (default 20)")
    p.add_argument("--result-file", default="supervised.json", help="name of the result JSON (default supervised.json)")


@mode("train_supervised_triseg", "learn tri-segment maps by gradient descent on KD -> tri_ppo_int_codes/<result-file>",
      _args)
def train_supervised_triseg(args: argparse.Namespace) -> None:
    prepare(args)
    for name in ("epochs", "log_every"):
        if getattr(args, name) < 1:
            raise TrisegError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    model, be, device, data, space = prepare_search(args)
    settings = SupervisedSettings(epochs=args.epochs, lr=args.lr, alpha=args.alpha, beta0=args.beta0,
                                  beta_min=args.beta_min, beta_decay=args.beta_decay, batch_size=args.batch_size,
                                  steps_per_epoch=args.steps_per_epoch, kd_T=args.kd_T, round_grad=args.round_grad,
                                  tmax=args.tmax,
                                  log_every=args.log_every, seed=args.seed)
    sim = model if device == "cuda" else simulate(model)
    stem = Path(args.result_file).stem
    writer = tensorboard_writer(run_dir(args, f"supervised__{stem}"))
    t0 = time.time()
    outcome = train_supervised(sim, space, data.train, settings, writer, teacher=model)
    writer.close()
    train_time = time.time() - t0
    top = TopK(len(outcome.epoch_configs))
    for epoch, config in enumerate(outcome.epoch_configs, 1):  # later epochs rank first among equals on val
        top.add(config, Score(float(epoch), 0.0, 0.0), epoch)
    history_path = write_json({"settings": vars(settings), "initial_tmax_rule": space.tmax,
                               "epoch_configs": [{k: vars(c) for k, c in cfg.items()} for cfg in outcome.epoch_configs],
                               "history": outcome.history},
                              Path(args.output_dir) / RESULT_DIR / f"{stem}.supervised.json")
    select_and_write(args, model, be, data, top, {
        "search": "supervised", "epochs": args.epochs, "gradient_steps": outcome.steps, "student_evaluations": 0,
        "alpha": args.alpha, "lr": args.lr, "beta0": args.beta0, "round_grad": args.round_grad, "tmax_mode": args.tmax,
        "search_wall_time_s": round(train_time, 1), "history_file": history_path.name,
        "tmax_rule": {"percentile": args.tmax_percentile, "margin": args.tmax_margin},
    })
