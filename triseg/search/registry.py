"""Search strategies by name: each entry builds a strategy for a search space from the CLI options."""

from __future__ import annotations

import argparse
from typing import Callable

from triseg.errors import TrisegError
from triseg.search.base import Strategy
from triseg.search.exact_mse import ExactMSEStrategy
from triseg.search.greedy import GreedyStrategy
from triseg.search.optuna_search import OptunaStrategy
from triseg.search.ppo import PPOConfig, PPOStrategy
from triseg.search.random_search import RandomStrategy
from triseg.search.space import SearchSpace
from triseg.search.warm import WarmPPOStrategy

Builder = Callable[[SearchSpace, argparse.Namespace], Strategy]


def _ppo_config(args: argparse.Namespace) -> PPOConfig:
    return PPOConfig(lr=args.lr, gamma=args.gamma, eps_clip=args.eps_clip, k_epochs=args.k_epochs,
                     update_timestep=args.update_timestep, value_coef=args.value_coef,
                     entropy_coef=args.entropy_coef)


def _ppo(space: SearchSpace, args: argparse.Namespace) -> Strategy:
    return PPOStrategy(space, _ppo_config(args), seed=args.seed)


STRATEGIES: dict[str, Builder] = {
    "ppo": _ppo,
    "random": lambda space, args: RandomStrategy(space, seed=args.seed),
    "tpe": lambda space, args: OptunaStrategy(space, "tpe", seed=args.seed),
    "cmaes": lambda space, args: OptunaStrategy(space, "cmaes", seed=args.seed),
    "greedy": lambda space, args: GreedyStrategy(space),
    "exact-mse": lambda space, args: ExactMSEStrategy(space),
    "ppo-warm": lambda space, args: WarmPPOStrategy(space, _ppo_config(args), seed=args.seed,
                                                    target_prob=args.warm_prob),
}


def build_strategy(name: str, space: SearchSpace, args: argparse.Namespace) -> Strategy:
    """The strategy registered as ``name``; a one-line error lists the valid names."""
    if name not in STRATEGIES:
        raise TrisegError(f"unknown search {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](space, args)
