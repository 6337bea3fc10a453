"""Search strategies by name: each entry builds a strategy for a search space from the job's typed settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from triseg.errors import TrisegError
from triseg.search.base import Strategy
from triseg.search.exact_mse import ExactMSEStrategy
from triseg.search.greedy import GreedyStrategy
from triseg.search.ladder import LadderStrategy
from triseg.search.optuna_search import OptunaStrategy
from triseg.search.ppo import PPOStrategy
from triseg.search.random_search import RandomStrategy
from triseg.search.space import SearchSpace
from triseg.search.warm import WarmPPOStrategy

if TYPE_CHECKING:
    from triseg.jobs import SearchConfig


@dataclass(frozen=True)
class StrategySpec:
    """How to build a strategy, and how many evaluations it needs at most (None: the whole budget)."""

    build: Callable[[SearchSpace, "SearchConfig"], Strategy]
    help: str
    max_evaluations: int | None = None


STRATEGIES: dict[str, StrategySpec] = {
    "ppo": StrategySpec(lambda space, cfg: PPOStrategy(space, cfg.ppo, seed=cfg.seed),
                        "the original tool's PPO policy"),
    "random": StrategySpec(lambda space, cfg: RandomStrategy(space, seed=cfg.seed), "independent legal configs"),
    "tpe": StrategySpec(lambda space, cfg: OptunaStrategy(space, "tpe", seed=cfg.seed,
                                                         batch=cfg.optuna.optuna_batch), "optuna's TPE"),
    "cmaes": StrategySpec(lambda space, cfg: OptunaStrategy(space, "cmaes", seed=cfg.seed,
                                                           batch=cfg.optuna.optuna_batch), "optuna's CMA-ES"),
    "greedy": StrategySpec(lambda space, cfg: GreedyStrategy(space), "coordinate search from the exact-MSE maps"),
    "exact-mse": StrategySpec(lambda space, cfg: ExactMSEStrategy(space),
                              "the minimum-squared-error maps of the calibration histograms", max_evaluations=1),
    "ppo-warm": StrategySpec(lambda space, cfg: WarmPPOStrategy(space, cfg.ppo, seed=cfg.seed,
                                                                target_prob=cfg.warm.warm_prob),
                             "PPO started at the exact-MSE maps"),
    "ladder": StrategySpec(lambda space, cfg: LadderStrategy(space, cfg.ladder),
                           "savings-first climb over per-layer tmax with exact-MSE maps (--objective savings "
                           "--dynamic-tmax)"),
}


def strategy_spec(name: str) -> StrategySpec:
    """The entry registered as ``name``; a one-line error lists the valid names."""
    if name not in STRATEGIES:
        raise TrisegError(f"unknown search {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name]


def build_strategy(space: SearchSpace, cfg: "SearchConfig") -> Strategy:
    """The strategy ``cfg.search`` for ``space``."""
    return strategy_spec(cfg.search).build(space, cfg)
