"""TPE and CMA-ES through optuna's ask/tell API.

Each layer gets four parameters in [0, 1] (five with a searched tmax: its position in [10, top code]):
t1's position in its range, t2's position in [t1+4, tmax-4], and v1, v2 as positions within their
segments (:func:`triseg.search.legal.decode`), so every sampled config is legal. Samplers are seeded;
the whole study (sampler state included) is pickled into the strategy state, so --resume continues
exactly where an uninterrupted run would.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any

import optuna

from triseg.approx.config import LayerCodes
from triseg.options import Options, between, option
from triseg.search.base import Score
from triseg.search.legal import DECODE_FIELDS, decode, pick
from triseg.search.space import SearchSpace


@dataclass
class OptunaConfig(Options):
    """Settings of the optuna strategies."""

    optuna_batch: int = option(1, "tpe, cmaes: trials asked before any is told, scored in one forward pass (1: the "
                                  "sequential search; more changes the search: a batch's later trials are sampled "
                                  "without the earlier ones' rewards)", check=between(1, 4096))


def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """optuna's TPE or CMA-ES sampler, seeded."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown optuna sampler {kind!r}")


class OptunaStrategy:
    """Ask a trial, decode its fractions into a legal config, tell optuna the reward.

    ``batch`` > 1 asks up to that many trials before telling any (:meth:`ask_many`, scored in one
    forward pass). That is opt-in because it changes the search: TPE then samples the later trials of a
    batch without the rewards of the earlier ones, and CMA-ES's first trials and those past the end of a
    generation are sampled before the results they would have waited for. With ``batch`` = 1 (the
    default) the proposals are exactly those of one-at-a-time asking.
    """

    def __init__(self, space: SearchSpace, kind: str, seed: int = 0, batch: int = 1) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.name, self.batch = space, kind, batch
        self.study = optuna.create_study(direction="maximize", sampler=make_sampler(kind, seed))
        self.trials: list[optuna.Trial] = []

    def ask(self, episode: int) -> dict[str, LayerCodes]:
        trial = self.study.ask()
        self.trials.append(trial)
        out = {}
        for layer in self.space.layers:
            tmax = self.space.tmax[layer]
            if self.space.dynamic:
                tmax = pick(self.space.tmax_range(), trial.suggest_float(f"{layer}.tmax", 0.0, 1.0))
            u = [trial.suggest_float(f"{layer}.{f}", 0.0, 1.0) for f in DECODE_FIELDS]
            out[layer] = decode(*u, tmax)
        return out

    def ask_many(self, episode: int, n: int) -> list[dict[str, LayerCodes]]:
        """Up to ``min(n, batch)`` trials, asked before any is told."""
        return [self.ask(episode + i) for i in range(max(1, min(n, self.batch)))]

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        self.study.tell(self.trials.pop(0), score.reward)
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"study": pickle.dumps(self.study)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.study = pickle.loads(state["study"])
        self.trials = []
