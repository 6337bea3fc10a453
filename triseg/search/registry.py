"""Search strategies by name: each entry builds a strategy for a search space from the CLI options."""

from __future__ import annotations

import argparse
from typing import Callable

from triseg.errors import TrisegError
from triseg.search.base import Strategy
from triseg.search.ppo import PPOConfig, PPOStrategy
from triseg.search.space import SearchSpace

Builder = Callable[[SearchSpace, argparse.Namespace], Strategy]


def _ppo(space: SearchSpace, args: argparse.Namespace) -> Strategy:
    cfg = PPOConfig(lr=args.lr, gamma=args.gamma, eps_clip=args.eps_clip, k_epochs=args.k_epochs,
                    update_timestep=args.update_timestep, value_coef=args.value_coef,
                    entropy_coef=args.entropy_coef)
    return PPOStrategy(space, cfg, seed=args.seed)


STRATEGIES: dict[str, Builder] = {"ppo": _ppo}


def build_strategy(name: str, space: SearchSpace, args: argparse.Namespace) -> Strategy:
    """The strategy registered as ``name``; a one-line error lists the valid names."""
    if name not in STRATEGIES:
        raise TrisegError(f"unknown search {name!r}; choose one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](space, args)
