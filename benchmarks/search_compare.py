"""Every search strategy side by side: same model, same data, same seeds, same budget of student evaluations.

For each seed the search space (calibration) and the episode batches are built once and shared by all
strategies; each run goes through the same loop, top-k, validation selection and single test evaluation
as ``train_ppo_triseg``. The best-so-far config (by reward) is also scored on the validation split at
log-spaced evaluation counts, for the convergence plot (never on test). Runs whose JSON exists are
skipped, so an interrupted benchmark continues where it stopped.

    python benchmarks/search_compare.py --model lenet5 --budget 1000 --seeds 0 1 2 \\
        --data-dir PATH/cifar10-jpg.tar.gz --out results/compare
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from triseg import quant  # noqa: E402
from triseg.approx.student import Config, evaluate_student  # noqa: E402
from triseg.artifacts import atomic_write_text, stage_path  # noqa: E402
from triseg.cli import build_parser  # noqa: E402
from triseg.cli import main as cli_main  # noqa: E402
from triseg.commands.common import load_data, prepare, write_json  # noqa: E402
from triseg.commands.search import load_student  # noqa: E402
from triseg.search.base import EpisodeBatches, Evaluator, Score, Strategy, TopK  # noqa: E402
from triseg.search.exact_mse import exact_mse_codes  # noqa: E402
from triseg.search.registry import STRATEGIES, build_strategy  # noqa: E402
from triseg.search.run import SearchSettings, result_json, run_search, select_and_test  # noqa: E402
from triseg.search.space import build_space  # noqa: E402

ZERO_COST = {"exact-mse": 1}  # strategies that need no search: one evaluation puts them in the top-k


class BestSoFar:
    """Wraps a strategy and snapshots the best config by reward at the given evaluation counts."""

    def __init__(self, inner: Strategy, checkpoints: list[int]) -> None:
        self.inner, self.name, self.checkpoints = inner, inner.name, set(checkpoints)
        self.best: tuple[float, Config] | None = None
        self.snapshots: dict[int, tuple[float, Config]] = {}

    def ask(self, episode: int) -> Config:
        return self.inner.ask(episode)

    def tell(self, episode: int, config: Config, score: Score) -> dict[str, float]:
        if self.best is None or score.reward > self.best[0]:
            self.best = (score.reward, dict(config))
        if episode + 1 in self.checkpoints:
            self.snapshots[episode + 1] = self.best
        return self.inner.tell(episode, config, score)

    def state_dict(self) -> dict[str, Any]:
        return {"inner": self.inner.state_dict(), "best": self.best, "snapshots": self.snapshots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.inner.load_state_dict(state["inner"])
        self.best, self.snapshots = state["best"], state["snapshots"]


def log_points(budget: int, n: int) -> list[int]:
    """About ``n`` log-spaced evaluation counts from 1 to ``budget``."""
    return sorted({max(1, round(math.exp(i * math.log(budget) / max(1, n - 1)))) for i in range(n)} | {budget})


def run_one(name: str, seed: int, model: torch.nn.Module, data, base: list[str], budget: int,
            out: Path, work: Path, n_points: int) -> dict[str, Any]:
    """One strategy at one seed: search, select on val, test once, best-so-far curve on val."""
    args = build_parser().parse_args([*base, "--search", name, "--seed", str(seed), "--episodes", str(budget)])
    torch.manual_seed(seed)
    space = build_space(model, data.train, args.calib_batches, args.batch_size,
                        quant.activation_top_code(args.backend), seed=seed)
    attention = [model.tap_name(layer) for layer in model.ATTENTION_LAYERS]
    evaluator = Evaluator(model, EpisodeBatches(model, data.train, args.batch_size, attention, seed=seed),
                          T=args.kd_T, attention_weight=args.attention_weight)
    episodes = ZERO_COST.get(name, budget)
    points = log_points(episodes, n_points)
    strategy = BestSoFar(build_strategy(name, space, args), points)
    settings = SearchSettings(episodes=episodes, top_k=args.top_k, max_acc_drop=args.max_acc_drop,
                              eval_every=max(1, episodes // 10), checkpoint_every=episodes)
    outcome = run_search(strategy, evaluator, settings, work / f"{name}__{seed}.ckpt",
                         work / "runs" / f"{name}__{seed}")
    t0 = time.time()
    chosen = select_and_test(model, data, outcome.top, args.max_acc_drop)
    selection_time = time.time() - t0
    teacher_val = chosen["validation"]["acc_teacher"]
    curve = [{"evaluations": n, "reward": r, "val_drop": teacher_val - evaluate_student(model, c, data.val).accuracy}
             for n, (r, c) in sorted(strategy.snapshots.items())]
    result = result_json(args.model, args.backend, chosen, {
        "search": name, "episodes": episodes, "student_evaluations": evaluator.evaluations, "seed": seed,
        "batch_size": args.batch_size, "calib_batches": args.calib_batches, "kd_T": args.kd_T,
        "attention_weight": args.attention_weight, "max_acc_drop": args.max_acc_drop, "tmax": space.tmax,
        "skipped_layers": space.skipped, "search_wall_time_s": round(outcome.wall_time, 1),
        "selection_wall_time_s": round(selection_time, 1), "data": data.source,
        "split_sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "best_reward": max(h["reward"] for h in outcome.history),
        "best_so_far_val": curve,
    })
    write_json(result, out / f"{name}__seed{seed}.json")
    return result


SUPERVISED = {"ste": ("supervised", ["--round-grad", "ste"]),
              "none": ("supervised-no-ste", ["--round-grad", "none"]),
              "fixed": ("supervised-fixed-tmax", ["--round-grad", "ste", "--tmax", "fixed"])}


def run_supervised(variant: str, seed: int, a: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    """train_supervised_triseg (epochs of ``a.supervised_steps`` batches) at one seed; result and trajectory files."""
    name, options = SUPERVISED[variant]
    stem = f"{name}__seed{seed}"
    model_file = stage_path(a.output_dir, a.model, "int8")
    if model_file.exists() and not (work / model_file.name).exists():
        (work / model_file.name).symlink_to(model_file.resolve())
    rc = cli_main(["train_supervised_triseg", "--model", a.model, "--workers", str(a.workers), "--seed", str(seed),
                   *(["--data-dir", a.data_dir] if a.data_dir else []), "--epochs", str(a.supervised_epochs),
                   "--steps-per-epoch", str(a.supervised_steps), *options, "--output-dir", str(work),
                   "--result-file", f"{stem}.json"])
    if rc != 0:
        raise SystemExit(f"train_supervised_triseg failed for seed {seed}")
    for suffix in (".json", ".supervised.json"):
        src = work / "tri_ppo_int_codes" / f"{stem}{suffix}"
        atomic_write_text(src.read_text(), out / src.name)
    return json.loads((out / f"{stem}.json").read_text())


def exact_mse_at(ref: dict[str, Any], seed: int, model: torch.nn.Module, data, base: list[str],
                 path: Path) -> dict[str, Any]:
    """The exact minimum-MSE maps with the tmax of another result (same calibration as the searches), one evaluation."""
    args = build_parser().parse_args([*base, "--seed", str(seed)])
    torch.manual_seed(seed)
    space = build_space(model, data.train, args.calib_batches, args.batch_size,
                        quant.activation_top_code(args.backend), seed=seed)
    config = {layer: exact_mse_codes(space.histograms[layer].counts, c["tmax_code"])[0]
              for layer, c in ref["layers"].items()}
    attention = [model.tap_name(layer) for layer in model.ATTENTION_LAYERS]
    evaluator = Evaluator(model, EpisodeBatches(model, data.train, args.batch_size, attention, seed=seed),
                          T=args.kd_T, attention_weight=args.attention_weight)
    top = TopK(1)
    score = evaluator.score(config, 0)
    top.add(config, score, 0)
    t0 = time.time()
    chosen = select_and_test(model, data, top, args.max_acc_drop)
    result = result_json(args.model, args.backend, chosen, {
        "search": "exact-mse", "tmax_from": ref["search"], "student_evaluations": evaluator.evaluations,
        "seed": seed, "best_reward": score.reward, "search_wall_time_s": 0.0,
        "selection_wall_time_s": round(time.time() - t0, 1), "data": data.source})
    write_json(result, path)
    return result


def measure_speed(model: torch.nn.Module, data, base: list[str], n: int) -> None:
    """Print student evaluations per second and the time of one validation evaluation (to size a budget)."""
    args = build_parser().parse_args(base)
    space = build_space(model, data.train, 4, args.batch_size, quant.activation_top_code(args.backend))
    taps = [model.tap_name(layer) for layer in model.ATTENTION_LAYERS]
    evaluator = Evaluator(model, EpisodeBatches(model, data.train, args.batch_size, taps), T=args.kd_T,
                          attention_weight=args.attention_weight)
    gen = torch.Generator().manual_seed(0)
    evaluator.score(space.random_config(gen), 0)
    t0 = time.time()
    for episode in range(1, n + 1):
        evaluator.score(space.random_config(gen), episode)
    rate = n / (time.time() - t0)
    t0 = time.time()
    evaluate_student(model, space.random_config(gen), data.val)
    val = time.time() - t0
    print(f"{args.model}: {rate:.2f} student evaluations/s (batch {args.batch_size}); one validation evaluation "
          f"({len(data.val)} images) {val:.1f}s; a run of budget B with top-k {args.top_k} takes about "
          f"B/{rate:.1f} + {args.top_k + 12}*{val:.0f} s")


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (std over seeds; 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def changed_share(result: dict[str, Any]) -> float:
    """Share of all activations at approximated taps whose code the chosen maps changed (test split)."""
    layers = result["coverage"]["layers"].values()
    return sum(c["changed_share"] * c["activations"] for c in layers) / max(1, sum(c["activations"] for c in layers))


def summarise(model: str, results: dict[str, list[dict[str, Any]]], budget: int, out: Path) -> str:
    """The Markdown table, best test drop first."""
    rows = []
    for name, runs in results.items():
        rewards = [r["best_reward"] for r in runs if "best_reward" in r]
        cost = (f"{runs[0]['gradient_steps']} grad steps" if "gradient_steps" in runs[0]
                else str(runs[0]["student_evaluations"]))
        rows.append((statistics.mean(r["metrics"]["acc_drop"] for r in runs), [
            f"`{name}`", str(len(runs)), cost,
            mean_std([r["validation"]["acc_drop"] for r in runs]),
            mean_std([r["metrics"]["acc_drop"] for r in runs]),
            (f"{statistics.mean(rewards):.4f} ± {(statistics.stdev(rewards) if len(rewards) > 1 else 0):.4f}"
             if rewards else "n/a"),
            mean_std([100 * r["coverage"]["mapped_share"] for r in runs]),
            mean_std([100 * changed_share(r) for r in runs]),
            mean_std([r["search_wall_time_s"] + r["selection_wall_time_s"] for r in runs]),
        ]))
    head = ["strategy", "seeds", "evaluations", "val drop (pt)", "test drop (pt)", "best reward",
            "mapped share (%)", "changed share (%)", "wall time (s)"]
    lines = [f"{model}, budget {budget} student evaluations per run (mean ± std over seeds; drops in accuracy points, "
             "lower is better)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in sorted(rows, key=lambda r: r[0])]
    text = "\n".join(lines) + "\n"
    atomic_write_text(text, out / "table.md")
    return text


def plot(model: str, results: dict[str, list[dict[str, Any]]], budget: int, out: Path) -> Path:
    """Best-so-far validation drop against student evaluations (mean over seeds, band = min..max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, runs in results.items():
        if "best_so_far_val" not in runs[0]:
            continue
        xs = [p["evaluations"] for p in runs[0]["best_so_far_val"]]
        ys = [[r["best_so_far_val"][i]["val_drop"] for r in runs] for i in range(len(xs))]
        style = "-"
        if len(xs) == 1:  # no search: a constant over the whole budget
            xs, ys, style = [1, budget], ys * 2, "--"
        mean = [statistics.mean(y) for y in ys]
        (line,) = ax.plot(xs, mean, style, marker="o", ms=3, label=name)
        ax.fill_between(xs, [min(y) for y in ys], [max(y) for y in ys], color=line.get_color(), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("student evaluations")
    ax.set_ylabel("validation accuracy drop of best-so-far config (points)")
    ax.set_title(f"{model}: best-so-far (by reward) config on the validation split")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "best_so_far.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="lenet5")
    p.add_argument("--budget", type=int, default=1000, help="student evaluations per run (default 1000)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--data-dir", default=None, help="CIFAR-10 (default: $TRISEG_DATA_DIR, else the tiny sample)")
    p.add_argument("--output-dir", default="outputs", help="where the INT8 model is (the zoo is the fallback)")
    p.add_argument("--out", default="results/compare", help="result folder (a <model>/ folder is made in it)")
    p.add_argument("--points", type=int, default=10, help="best-so-far checkpoints on val (default 10)")
    p.add_argument("--workers", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--exact-mse-at", nargs="*", default=["supervised"],
                   help="also score exact-MSE maps at the tmax these runs chose (default: supervised, when present)")
    p.add_argument("--speed", type=int, default=0, help="only time this many student evaluations, then exit")
    p.add_argument("--supervised-steps", type=int, default=0,
                   help="also run train_supervised_triseg with this many batches per epoch (default 0: skip)")
    p.add_argument("--supervised-epochs", type=int, default=3, help="epochs of the supervised runs (default 3)")
    p.add_argument("--supervised-variants", nargs="+", default=list(SUPERVISED), choices=list(SUPERVISED),
                   help="supervised runs: ste (the original method with STE rounding), none (zero rounding "
                        "gradients), fixed (STE, tmax fixed at the search's rule); default all")
    p.add_argument("--supervised-seeds", type=int, nargs="+", default=None,
                   help="seeds of the supervised runs (default: --seeds)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: table and plot from the result JSONs already in --out")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further train_ppo_triseg options for every run (e.g. --extra --batch-size 64)")
    a = p.parse_args()
    base = ["train_ppo_triseg", "--model", a.model, "--output-dir", a.output_dir, "--workers", str(a.workers),
            *(["--data-dir", a.data_dir] if a.data_dir else []), *a.extra]
    args = build_parser().parse_args(base)
    prepare(args)
    model, args.backend, _ = load_student(args)
    base += ["--backend", args.backend]
    data = load_data(args)
    if a.speed:
        return measure_speed(model, data, base, a.speed)
    out = Path(a.out) / a.model
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in a.strategies}
    with tempfile.TemporaryDirectory(prefix="search_compare_") as work:
        for seed in a.seeds:
            for name in a.strategies:
                path = out / f"{name}__seed{seed}.json"
                if path.exists():
                    result = json.loads(path.read_text())
                elif a.report_only:
                    continue
                else:
                    result = run_one(name, seed, model, data, base, a.budget, out, Path(work), a.points)
                print(f"{a.model} {name} seed {seed}: val drop {result['validation']['acc_drop']:.2f} "
                      f"test drop {result['metrics']['acc_drop']:.2f} best reward {result['best_reward']:.4f} "
                      f"({result['search_wall_time_s']:.0f}s)", flush=True)
                results[name].append(result)
            for variant, (name, _) in SUPERVISED.items():  # earlier supervised results are reported too
                path = out / f"{name}__seed{seed}.json"
                wanted = (a.supervised_steps and not a.report_only and variant in a.supervised_variants
                          and (a.supervised_seeds is None or seed in a.supervised_seeds))
                if not path.exists() and not wanted:
                    continue
                result = (json.loads(path.read_text()) if path.exists()
                          else run_supervised(variant, seed, a, out, Path(work)))
                print(f"{a.model} {name} seed {seed}: val drop {result['validation']['acc_drop']:.2f} "
                      f"test drop {result['metrics']['acc_drop']:.2f}", flush=True)
                results.setdefault(name, []).append(result)
        for ref_name in a.exact_mse_at:
            for seed in a.seeds:
                ref_path = out / f"{ref_name}__seed{seed}.json"
                path = out / f"exact-mse@{ref_name}-tmax__seed{seed}.json"
                if not ref_path.exists() or (a.report_only and not path.exists()):
                    continue
                result = (json.loads(path.read_text()) if path.exists()
                          else exact_mse_at(json.loads(ref_path.read_text()), seed, model, data, base, path))
                print(f"{a.model} exact-mse at {ref_name}'s tmax seed {seed}: val drop "
                      f"{result['validation']['acc_drop']:.2f} test drop {result['metrics']['acc_drop']:.2f}",
                      flush=True)
                results.setdefault(f"exact-mse@{ref_name}-tmax", []).append(result)
    results = {name: runs for name, runs in results.items() if runs}
    print(summarise(a.model, results, a.budget, out))
    print(f"-> {out / 'table.md'}, {plot(a.model, results, a.budget, out)}")


if __name__ == "__main__":
    main()
