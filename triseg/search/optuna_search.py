"""TPE and CMA-ES through optuna's ask/tell API.

Each layer gets four parameters in [0, 1] (five with a searched tmax: its position in [10, top code]): t1's position in its range, t2's position in
[t1+4, tmax-4], and v1, v2 as positions within their segments (:func:`triseg.search.legal.decode`),
so every sampled config is legal. Samplers are seeded; the whole study (sampler state included) is
pickled into the strategy state, so --resume continues exactly where an uninterrupted run would.
"""

from __future__ import annotations

import pickle
from typing import Any

import optuna

from triseg.approx.config import LayerCodes
from triseg.search.base import Score
from triseg.search.legal import DECODE_FIELDS, decode, pick
from triseg.search.space import SearchSpace

def make_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """optuna's TPE or CMA-ES sampler, seeded."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown optuna sampler {kind!r}")


class OptunaStrategy:
    """Ask a trial, decode its fractions into a legal config, tell optuna the reward."""

    def __init__(self, space: SearchSpace, kind: str, seed: int = 0) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.space, self.name = space, kind
        self.study = optuna.create_study(direction="maximize", sampler=make_sampler(kind, seed))
        self.trial: optuna.Trial | None = None

    def ask(self, episode: int) -> dict[str, LayerCodes]:
        self.trial = self.study.ask()
        out = {}
        for layer in self.space.layers:
            tmax = self.space.tmax[layer]
            if self.space.dynamic:
                tmax = pick(self.space.tmax_range(), self.trial.suggest_float(f"{layer}.tmax", 0.0, 1.0))
            u = [self.trial.suggest_float(f"{layer}.{f}", 0.0, 1.0) for f in DECODE_FIELDS]
            out[layer] = decode(*u, tmax)
        return out

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        self.study.tell(self.trial, score.reward)
        self.trial = None
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"study": pickle.dumps(self.study)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.study = pickle.loads(state["study"])
        self.trial = None
