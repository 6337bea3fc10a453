"""Random search: independent legal configs drawn from a seeded generator."""

from __future__ import annotations

from typing import Any

import torch

from triseg.approx.config import LayerCodes
from triseg.search.base import Score
from triseg.search.space import SearchSpace


class RandomStrategy:
    """Each config from ``SearchSpace.random_config`` (each code uniform given the earlier ones, like an
    untrained masked policy)."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.gen = torch.Generator().manual_seed(seed)

    def ask(self, episode: int) -> dict[str, LayerCodes]:
        return self.space.random_config(self.gen)

    def ask_many(self, episode: int, n: int) -> list[dict[str, LayerCodes]]:
        """``n`` draws (each independent of every reward)."""
        return [self.ask(episode + i) for i in range(n)]

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.gen.set_state(state["gen"])
