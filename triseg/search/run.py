"""The search loop every strategy shares: ask, score, tell, keep the top-k, log, checkpoint and
resume; then select on the validation split and evaluate the chosen config once on test."""

from __future__ import annotations

import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from triseg.approx.config import TrisegConfig
from triseg.approx.student import Config, evaluate_student
from triseg.artifacts import atomic_save
from triseg.data import Cifar10
from triseg.runlog import tensorboard_writer
from triseg.search.base import Evaluator, Strategy, TopK


@dataclass
class SearchSettings:
    """Loop settings shared by every strategy."""

    episodes: int
    top_k: int = 30
    max_acc_drop: float = 2.0
    eval_every: int = 100
    checkpoint_every: int = 100
    stop_after: int | None = None


@dataclass
class SearchOutcome:
    """Everything the loop learned: the top-k, per-episode history and timing."""

    top: TopK
    history: list[dict[str, float]]
    wall_time: float
    finished: bool


def run_search(strategy: Strategy, evaluator: Evaluator, settings: SearchSettings, checkpoint: Path,
               log_dir: Path, resume: bool = False) -> SearchOutcome:
    """Run ``settings.episodes`` evaluations; checkpoint so that --resume ends where a full run would."""
    top = TopK(settings.top_k)
    history: list[dict[str, float]] = []
    start, elapsed = 0, 0.0
    if resume and checkpoint.exists():
        state = torch.load(checkpoint, weights_only=False)
        strategy.load_state_dict(state["strategy"])
        top.load_state_dict(state["top"])
        history, start, elapsed = state["history"], state["episode"], state["wall_time"]
        evaluator.evaluations = state["evaluations"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
    writer = tensorboard_writer(log_dir)
    t0 = time.time() - elapsed
    best = max((h["reward"] for h in history), default=float("-inf"))

    def save(episode: int) -> None:
        atomic_save({"strategy": strategy.state_dict(), "top": top.state_dict(), "history": history,
                     "episode": episode, "wall_time": time.time() - t0, "evaluations": evaluator.evaluations,
                     "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                     "python_rng": random.getstate()}, checkpoint)

    bar = tqdm(range(start, settings.episodes), initial=start, total=settings.episodes,
               desc=f"search {strategy.name}", mininterval=2.0, dynamic_ncols=True)
    for episode in bar:
        config = strategy.ask(episode)
        score = evaluator.score(config, episode)
        losses = strategy.tell(episode, config, score)
        top.add(config, score, episode)
        best = max(best, score.reward)
        history.append({"episode": episode, "reward": score.reward, "kd": score.kd, "at": score.at, "best": best})
        writer.add_scalar("search/reward", score.reward, episode)
        writer.add_scalar("search/kd_loss", score.kd, episode)
        writer.add_scalar("search/attn_loss", score.at, episode)
        writer.add_scalar("search/best_reward", best, episode)
        for key, value in losses.items():
            writer.add_scalar(f"ppo/{key}", value, episode)
        if (episode + 1) % settings.eval_every == 0:
            for layer, c in config.items():
                for field in ("t1", "v1", "t2", "v2"):
                    writer.add_scalar(f"codes/{layer}/{field}", getattr(c, field), episode)
            tqdm.write(f"episode {episode + 1}: reward {score.reward:.4f} (kd {score.kd:.4f}, at {score.at:.5f}) "
                       f"best {best:.4f}")
        bar.set_postfix(best=f"{best:.4f}", refresh=False)
        done = episode + 1
        if done % settings.checkpoint_every == 0 or done == settings.episodes:
            save(done)
        if settings.stop_after is not None and done >= settings.stop_after:
            writer.close()
            return SearchOutcome(top, history, time.time() - t0, finished=False)
    writer.close()
    return SearchOutcome(top, history, time.time() - t0, finished=True)


def select_and_test(model: nn.Module, data: Cifar10, top: TopK, max_acc_drop: float,
                    batch_size: int = 256) -> dict[str, Any]:
    """Evaluate every top-k config on val, pick the most accurate within the drop limit, test it once."""
    teacher_val = evaluate_student(model, {}, data.val, batch_size, coverage=False).accuracy
    rows = []
    for cand in tqdm(top.best(), desc="validate top-k", leave=False, mininterval=2.0):
        ev = evaluate_student(model, cand.config, data.val, batch_size, coverage=False)
        rows.append({"candidate": cand, "val_acc": ev.accuracy, "val_drop": teacher_val - ev.accuracy})
    if not rows:
        raise RuntimeError("the search produced no candidate configs")
    within = [r for r in rows if r["val_drop"] <= max_acc_drop]
    if within:
        chosen = max(within, key=lambda r: (r["val_acc"], r["candidate"].reward))
        selection = f"constrained-best (val drop={chosen['val_drop']:.2f}% <= {max_acc_drop}%)"
    else:
        chosen = max(rows, key=lambda r: (r["val_acc"], r["candidate"].reward))
        selection = f"unconstrained-best (val drop={chosen['val_drop']:.2f}% > {max_acc_drop}%)"
        warnings.warn(f"no top-k config stays within --max-acc-drop {max_acc_drop} on val; "
                      f"reporting the most accurate one", stacklevel=1)
    config: Config = chosen["candidate"].config
    teacher_test = evaluate_student(model, {}, data.test, batch_size)
    student_test = evaluate_student(model, config, data.test, batch_size)
    return {
        "config": config,
        "selection": selection,
        "metrics": {"acc_teacher": round(teacher_test.accuracy, 4), "acc_student": round(student_test.accuracy, 4),
                    "acc_drop": round(teacher_test.accuracy - student_test.accuracy, 4)},
        "validation": {"acc_teacher": teacher_val, "acc_student": chosen["val_acc"], "acc_drop": chosen["val_drop"],
                       "candidates": [{"reward": r["candidate"].reward, "episode": r["candidate"].episode,
                                       "val_acc": r["val_acc"], "val_drop": r["val_drop"]} for r in rows]},
        "coverage": {"mapped_share": student_test.mapped_share, "layers": student_test.coverage},
        "test_top1_agreement": 100.0 * student_test.predictions.eq(teacher_test.predictions).float().mean().item(),
    }


def result_json(model_name: str, backend: str, outcome: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The result file: the original shape plus extra keys."""
    cfg = TrisegConfig(model_name, backend, outcome["config"], {})
    return {**cfg.to_json(), "selection": outcome["selection"], "metrics": outcome["metrics"],
            "validation": outcome["validation"], "coverage": outcome["coverage"],
            "test_top1_agreement_with_teacher": outcome["test_top1_agreement"], **extra}
