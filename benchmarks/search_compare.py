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

from triseg import api  # noqa: E402


class BestSoFar:
    """Wraps a strategy and snapshots the best config by reward at the given evaluation counts."""

    def __init__(self, inner: api.Strategy, checkpoints: list[int]) -> None:
        self.inner, self.name, self.checkpoints = inner, inner.name, set(checkpoints)
        self.best: tuple[float, api.Config] | None = None
        self.snapshots: dict[int, tuple[float, api.Config]] = {}

    def ask(self, episode: int) -> api.Config:
        return self.inner.ask(episode)

    def tell(self, episode: int, config: api.Config, score: api.Score) -> dict[str, float]:
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


def write_result(result: api.SearchResult, path: Path) -> dict[str, Any]:
    """Write a result JSON and return its content."""
    result.write(path)
    return result.to_json()


def run_one(cfg: api.SearchConfig, teacher: api.Teacher, data: api.Cifar10, space: api.SearchSpace, out: Path,
            work: Path, n_points: int) -> dict[str, Any]:
    """One strategy at one seed through the search job; best-so-far curve on val."""
    limit = api.STRATEGIES[cfg.search].max_evaluations
    episodes = cfg.episodes if limit is None else min(cfg.episodes, limit)
    points = log_points(episodes, n_points)
    wrapped: list[BestSoFar] = []

    def wrap(strategy: api.Strategy) -> api.Strategy:
        wrapped.append(BestSoFar(strategy, points))
        return wrapped[0]

    cfg = cfg.replace(output_dir=str(work), result_file=f"{cfg.search}__seed{cfg.seed}.json",
                      eval_every=max(1, episodes // 10), checkpoint_every=episodes)
    run = api.run_search(cfg, teacher, data, space, wrap=wrap)
    assert run.result is not None
    teacher_val = run.result.validation.acc_teacher
    run.result.settings["best_so_far_val"] = [
        {"evaluations": n, "reward": r,
         "val_drop": teacher_val - api.evaluate_student(teacher.model, c, data.val).accuracy}
        for n, (r, c) in sorted(wrapped[0].snapshots.items())]
    return write_result(run.result, out / f"{cfg.search}__seed{cfg.seed}.json")


SUPERVISED = {"ste": ("supervised", {"round_grad": "ste"}),
              "none": ("supervised-no-ste", {"round_grad": "none"}),
              "fixed": ("supervised-fixed-tmax", {"round_grad": "ste", "tmax": "fixed"})}


def run_supervised(variant: str, cfg: api.SearchConfig, teacher: api.Teacher, data: api.Cifar10,
                   space: api.SearchSpace, a: argparse.Namespace, out: Path, work: Path) -> dict[str, Any]:
    """The supervised method (epochs of ``a.supervised_steps`` batches) at one seed; result and trajectory files."""
    name, options = SUPERVISED[variant]
    stem = f"{name}__seed{cfg.seed}"
    job = api.SupervisedJobConfig(
        model=cfg.model, output_dir=str(work), workers=cfg.workers, seed=cfg.seed, batch_size=128,
        max_acc_drop=cfg.max_acc_drop, kd_T=cfg.kd_T, no_test=cfg.no_test, space=cfg.space,
        result_file=f"{stem}.json",
        supervised=api.SupervisedConfig(epochs=a.supervised_epochs, steps_per_epoch=a.supervised_steps, **options))
    run = api.run_supervised(job, teacher, data, space)
    assert run.result is not None
    history = work / "tri_ppo_int_codes" / f"{stem}.supervised.json"
    (out / history.name).write_text(history.read_text())
    return write_result(run.result, out / f"{stem}.json")


def exact_mse_at(ref: dict[str, Any], cfg: api.SearchConfig, teacher: api.Teacher, data: api.Cifar10,
                 space: api.SearchSpace, path: Path) -> dict[str, Any]:
    """The exact minimum-MSE maps with the tmax of another result (same calibration as the searches), one evaluation."""
    config = {layer: api.exact_mse_codes(space.histograms[layer].counts, c["tmax_code"])[0]
              for layer, c in ref["layers"].items()}
    evaluator = api.make_evaluator(teacher, data, cfg)
    top = api.TopK(1)
    score = evaluator.score(config, 0)
    top.add(config, score, 0)
    result = api.select_result(teacher, data, top, cfg.max_acc_drop, cfg.no_test, {
        "search": "exact-mse", "tmax_from": ref["search"], "student_evaluations": evaluator.evaluations,
        "seed": cfg.seed, "best_reward": score.reward, "search_wall_time_s": 0.0, "data": data.source})
    return write_result(result, path)


def measure_speed(cfg: api.SearchConfig, teacher: api.Teacher, data: api.Cifar10, n: int) -> None:
    """Print student evaluations per second and the time of one validation evaluation (to size a budget)."""
    space = api.build_space(teacher, data, cfg.space.replace(calib_batches=4), cfg.batch_size, cfg.seed)
    evaluator = api.make_evaluator(teacher, data, cfg)
    gen = torch.Generator().manual_seed(0)
    evaluator.score(space.random_config(gen), 0)
    t0 = time.time()
    for episode in range(1, n + 1):
        evaluator.score(space.random_config(gen), episode)
    rate = n / (time.time() - t0)
    t0 = time.time()
    api.evaluate_student(teacher.model, space.random_config(gen), data.val)
    val = time.time() - t0
    print(f"{cfg.model}: {rate:.2f} student evaluations/s (batch {cfg.batch_size}); one validation evaluation "
          f"({len(data.val)} images) {val:.1f}s; a run of budget B with top-k {cfg.top_k} takes about "
          f"B/{rate:.1f} + {cfg.top_k + 12}*{val:.0f} s")


def mean_std(values: list[float]) -> str:
    """``mean ± std`` (std over seeds; 0 for one seed)."""
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def changed_share(result: dict[str, Any]) -> float:
    """Share of all activations at approximated taps whose code the chosen maps changed (test split)."""
    layers = result["coverage"]["layers"].values()
    return sum(c["changed_share"] * c["activations"] for c in layers) / max(1, sum(c["activations"] for c in layers))


def multiplies_left(runs: list[dict[str, Any]]) -> str:
    """Mean ± std of the cost model's multiplies left (vs zero-skipping INT8), and the split it was counted on."""
    counted = [r["hardware"] for r in runs if "hardware" in r]
    if len(counted) != len(runs):
        return "n/a"
    values = [h["totals"]["multiplies_left_vs_zero_skipping_int8"] for h in counted]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {std:.3f} ({counted[0]['split']})"


def summarise(model: str, results: dict[str, list[dict[str, Any]]], budget: int, out: Path) -> str:
    """The Markdown table, best test drop first."""
    rows = []
    for name, runs in results.items():
        rewards = [r["best_reward"] for r in runs if "best_reward" in r]
        cost = (f"{runs[0]['gradient_steps']} grad steps" if "gradient_steps" in runs[0]
                else str(runs[0]["student_evaluations"]))
        tested = [r["metrics"]["acc_drop"] for r in runs if "metrics" in r]
        rows.append((statistics.mean(tested) if tested else statistics.mean(r["validation"]["acc_drop"] for r in runs), [
            f"`{name}`", str(len(runs)), cost,
            mean_std([r["validation"]["acc_drop"] for r in runs]),
            mean_std(tested) if len(tested) == len(runs) else "not evaluated",
            (f"{statistics.mean(rewards):.4f} ± {(statistics.stdev(rewards) if len(rewards) > 1 else 0):.4f}"
             if rewards else "n/a"),
            mean_std([100 * r["coverage"]["mapped_share"] for r in runs]),
            mean_std([100 * changed_share(r) for r in runs]),
            multiplies_left(runs),
            mean_std([r["search_wall_time_s"] + r["selection_wall_time_s"] for r in runs]),
        ]))
    head = ["strategy", "seeds", "evaluations", "val drop (pt)", "test drop (pt)", "best reward",
            "mapped share (%)", "changed share (%)", "multiplies left", "wall time (s)"]
    lines = [f"{model}, budget {budget} student evaluations per run (mean ± std over seeds; drops in accuracy points, "
             "lower is better)", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cells) + " |" for _, cells in sorted(rows, key=lambda r: r[0])]
    text = "\n".join(lines) + "\n"
    api.atomic_write_text(text, out / "table.md")
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
    p.add_argument("--strategies", nargs="+", default=list(api.STRATEGIES), choices=list(api.STRATEGIES))
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
    base = api.parse_options(api.SearchConfig, [
        "--model", a.model, "--output-dir", a.output_dir, "--workers", str(a.workers),
        *(["--data-dir", a.data_dir] if a.data_dir else []), *a.extra], prog="--extra")
    teacher = api.load_teacher(base.model, base.output_dir, base.engine, base.device, base.backend)
    data = api.load_data(base)
    if a.speed:
        return measure_speed(base, teacher, data, a.speed)
    out = Path(a.out) / a.model
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in a.strategies}
    with tempfile.TemporaryDirectory(prefix="search_compare_") as work:
        for seed in a.seeds:
            cfg = base.replace(seed=seed, episodes=a.budget)
            space = None if a.report_only else api.build_space(teacher, data, cfg.space, cfg.batch_size, seed)
            for name in a.strategies:
                path = out / f"{name}__seed{seed}.json"
                if path.exists():
                    result = json.loads(path.read_text())
                elif a.report_only:
                    continue
                else:
                    result = run_one(cfg.replace(search=name), teacher, data, space, out, Path(work), a.points)
                print(f"{a.model} {name} seed {seed}: val drop {result['validation']['acc_drop']:.2f} "
                      f"{test_text(result)} best reward {result['best_reward']:.4f} "
                      f"({result['search_wall_time_s']:.0f}s)", flush=True)
                results[name].append(result)
            for variant, (name, _) in SUPERVISED.items():  # earlier supervised results are reported too
                path = out / f"{name}__seed{seed}.json"
                wanted = (a.supervised_steps and not a.report_only and variant in a.supervised_variants
                          and (a.supervised_seeds is None or seed in a.supervised_seeds))
                if not path.exists() and not wanted:
                    continue
                result = (json.loads(path.read_text()) if path.exists()
                          else run_supervised(variant, cfg, teacher, data, space, a, out, Path(work)))
                print(f"{a.model} {name} seed {seed}: val drop {result['validation']['acc_drop']:.2f} "
                      f"{test_text(result)}", flush=True)
                results.setdefault(name, []).append(result)
            for ref_name in a.exact_mse_at:
                ref_path = out / f"{ref_name}__seed{seed}.json"
                path = out / f"exact-mse@{ref_name}-tmax__seed{seed}.json"
                if not ref_path.exists() or (a.report_only and not path.exists()):
                    continue
                result = (json.loads(path.read_text()) if path.exists()
                          else exact_mse_at(json.loads(ref_path.read_text()), cfg, teacher, data, space, path))
                print(f"{a.model} exact-mse at {ref_name}'s tmax seed {seed}: val drop "
                      f"{result['validation']['acc_drop']:.2f} {test_text(result)}", flush=True)
                results.setdefault(f"exact-mse@{ref_name}-tmax", []).append(result)
    results = {name: runs for name, runs in results.items() if runs}
    print(summarise(a.model, results, a.budget, out))
    print(f"-> {out / 'table.md'}, {plot(a.model, results, a.budget, out)}")


def test_text(result: dict[str, Any]) -> str:
    """``test drop X`` or ``test not evaluated``."""
    return f"test drop {result['metrics']['acc_drop']:.2f}" if "metrics" in result else "test not evaluated"


if __name__ == "__main__":
    main()
