"""The search loop every strategy shares: ask, score, tell, keep the top-k, log, checkpoint and resume."""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from triseg.approx.student import Config
from triseg.artifacts import atomic_save, load_checkpoint, resume_from
from triseg.errors import TrisegError
from triseg.runlog import tensorboard_writer
from triseg.search.base import Evaluator, ParetoArchive, Score, Strategy, TopK, candidate_list


@dataclass
class SearchSettings:
    """Loop settings shared by every strategy."""

    episodes: int
    top_k: int = 30
    max_acc_drop: float = 2.0
    eval_every: int = 100
    checkpoint_every: int = 100
    stop_after: int | None = None
    objective: str = "reward"
    score_batch: int = 16  # most configs scored in one forward pass (strategies with ask_many); 1 = one at a time


@dataclass
class SearchOutcome:
    """Everything the loop learned: the top-k, per-episode history and timing."""

    top: TopK | ParetoArchive
    history: list[dict[str, float]]
    wall_time: float
    finished: bool


def _identity(strategy: Strategy, evaluator: Evaluator, settings: SearchSettings) -> dict[str, object]:
    """What a checkpoint must match to be continued: the strategy and its space, the budget and the reward
    (``stop_after`` and the logging periods may change)."""
    batches = getattr(evaluator, "batches", None)
    space = getattr(strategy, "space", None)
    return {"strategy": strategy.name, "ask_batch": getattr(strategy, "batch", None), "episodes": settings.episodes,
            "top_k": settings.top_k, "objective": settings.objective, "kd_T": getattr(evaluator, "T", None),
            "attention_weight": getattr(evaluator, "attention_weight", None),
            "savings_weight": getattr(evaluator, "savings_weight", None),
            "batch_size": getattr(batches, "batch_size", None), "train_images": len(getattr(batches, "split", ())),
            "tmax": dict(getattr(space, "tmax", {}))}


def run_search(strategy: Strategy, evaluator: Evaluator, settings: SearchSettings, checkpoint: Path,
               log_dir: Path, resume: bool = False, resume_or_start: bool = False) -> SearchOutcome:
    """Run ``settings.episodes`` evaluations; checkpoint so that --resume ends where a full run would.

    ``resume`` needs the checkpoint (a one-line error without it, or when it is damaged or was made with
    other settings); ``resume_or_start`` uses it when present. ``stop_after`` ends the run early with a
    checkpoint of exactly the episodes done. A strategy whose ``done`` attribute turns true (the ladder at
    the end of its climb) ends the search before the budget.
    """
    top = candidate_list(settings.objective, settings.top_k)
    history: list[dict[str, float]] = []
    start, elapsed = 0, 0.0
    if resume_from(checkpoint, resume, resume_or_start):
        state = load_checkpoint(checkpoint, "search checkpoint")
        now = _identity(strategy, evaluator, settings)
        made_with = state.get("settings", now)
        changed = [k for k in now if isinstance(made_with, dict) and made_with.get(k, now[k]) != now[k]]
        if not isinstance(made_with, dict) or changed:
            what = ", ".join(f"{k} {made_with[k]} there, {now[k]} here" for k in changed[:2]) or "unreadable"
            raise TrisegError(f"search checkpoint {checkpoint} was made with other settings ({what}): pass the "
                              f"same options to resume, or drop --resume")
        try:
            strategy.load_state_dict(state["strategy"])
            top.load_state_dict(state["top"])
            history, start, elapsed = list(state["history"]), int(state["episode"]), float(state["wall_time"])
            evaluator.evaluations = state["evaluations"]
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            random.setstate(state["python_rng"])
        except Exception as exc:  # a foreign or edited file fails in many ways
            raise TrisegError(f"search checkpoint {checkpoint} does not fit this search ({type(exc).__name__}): "
                              f"delete it to start again, or drop --resume") from None
    writer = tensorboard_writer(log_dir)
    t0 = time.time() - elapsed
    best = max((h["reward"] for h in history), default=float("-inf"))

    def save(episode: int) -> None:
        atomic_save({"strategy": strategy.state_dict(), "top": top.state_dict(), "history": history,
                     "episode": episode, "wall_time": time.time() - t0, "evaluations": evaluator.evaluations,
                     "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                     "python_rng": random.getstate(), "settings": _identity(strategy, evaluator, settings)},
                    checkpoint)

    bar = tqdm(total=settings.episodes, initial=start, desc=f"search {strategy.name}", mininterval=2.0,
               dynamic_ncols=True)
    saved = False
    episode = start
    try:
        while episode < settings.episodes and not getattr(strategy, "done", False):
            group = _group_end(episode, settings) - episode
            for config, score, losses in _steps(strategy, evaluator, episode, group):
                top.add(config, score, episode)
                best = max(best, score.reward)
                row = {"episode": episode, "reward": score.reward, "kd": score.kd, "at": score.at, "best": best}
                if score.multiplies_left is not None:
                    row["multiplies_left"] = score.multiplies_left
                    writer.add_scalar("search/multiplies_left", score.multiplies_left, episode)
                history.append(row)
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
                    tqdm.write(f"episode {episode + 1}: reward {score.reward:.4f} (kd {score.kd:.4f}, "
                               f"at {score.at:.5f}) best {best:.4f}")
                episode += 1
                bar.update(1)
            bar.set_postfix(best=f"{best:.4f}", refresh=False)
            stop = settings.stop_after is not None and settings.stop_after <= episode < settings.episodes
            if episode % settings.checkpoint_every == 0 or episode == settings.episodes or stop:
                save(episode)
                saved = True
            if stop:
                bar.close()
                writer.close()
                return SearchOutcome(top, history, time.time() - t0, finished=False)
    except TrisegError:
        bar.close()  # the error line must not share a line with the bar
        if not saved:
            writer.discard()  # no checkpoint of this run to resume: take back its TensorBoard files
        raise
    if episode < settings.episodes:  # the strategy is done before the budget: a resume must end here too
        save(episode)
    bar.close()
    writer.close()
    return SearchOutcome(top, history, time.time() - t0, finished=True)


def _group_end(episode: int, settings: SearchSettings) -> int:
    """Where the group of episodes starting at ``episode`` must end: at most ``score_batch`` episodes, and
    never past a checkpoint, ``stop_after`` or the budget (a checkpoint always falls between groups)."""
    end = min(settings.episodes, episode + max(1, settings.score_batch),
              (episode // settings.checkpoint_every + 1) * settings.checkpoint_every)
    if settings.stop_after is not None and episode < settings.stop_after:
        end = min(end, settings.stop_after)
    return end


def _steps(strategy: Strategy, evaluator: Evaluator, episode: int,
           most: int) -> Iterator[tuple[Config, Score, dict[str, float]]]:
    """Ask, score and tell up to ``most`` episodes from ``episode``: several in one forward pass when the
    strategy can propose them before any is told (``ask_many``) and the evaluator has ``score_many``,
    else one. Yields each episode in order; a diverged reward or strategy is a one-line error."""
    hint = "the search diverged; use a larger --kd-T, a smaller --attention-weight or a smaller --lr"
    done = episode
    try:
        if hasattr(evaluator, "group_size"):
            most = evaluator.group_size(most)
        if most > 1 and hasattr(strategy, "ask_many") and hasattr(evaluator, "score_many"):
            configs = strategy.ask_many(episode, most)
            scores = evaluator.score_many(configs, range(episode, episode + len(configs)))
        else:
            configs = [strategy.ask(episode)]
            scores = [evaluator.score(configs[0], episode)]
        for config, score in zip(configs, scores):
            if not math.isfinite(score.reward):
                raise TrisegError(f"episode {done + 1} gave a non-finite reward (kd {score.kd}, at {score.at}): "
                                  f"{hint}")
            losses = strategy.tell(done, config, score)
            bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
            if bad:
                raise TrisegError(f"episode {done + 1}: the {strategy.name} update gave {bad}: {hint}")
            yield config, score, losses
            done += 1
    except (RuntimeError, ValueError) as exc:  # a policy with NaN weights fails in torch.distributions
        text = " ".join(str(exc).split())
        if "nan" not in text.lower() and "inf" not in text.lower():
            raise
        raise TrisegError(f"episode {done + 1}: {text[:100]}: {hint}") from None
