"""Greedy coordinate search on the real reward, layer by layer.

Starting from the exact minimum-MSE config (free: no evaluation), each round takes one code (t1, t2,
v1 or v2 of one layer, in forward order; with a searched tmax, tmax first) and evaluates the incumbent
together with every legal value at distance 1, 2, 4, ..., 32 from the current one (codes after a moved
threshold are clamped back into their ranges). The round's best reward becomes the incumbent. Rounds
cycle over all codes until the budget is spent. Every reward is from a different training batch, so
the incumbent is re-scored in each round rather than compared with an old score.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from triseg.approx.config import CHOICE_ORDER, LayerCodes
from triseg.search.base import Score, config_key
from triseg.search.exact_mse import exact_mse_config
from triseg.search.legal import project
from triseg.search.space import SearchSpace

STEPS = (1, 2, 4, 8, 16, 32)


class GreedyStrategy:
    """Coordinate search: ask returns the pending configs of the current round one by one."""

    name = "greedy"

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.incumbent = exact_mse_config(space)
        self.position = 0
        self.pending: list[dict[str, LayerCodes]] = []
        self.results: list[tuple[float, dict[str, LayerCodes]]] = []

    def _round(self) -> list[dict[str, LayerCodes]]:
        """The configs of the next round that has at least one move (incumbent first)."""
        fields = ("tmax", *CHOICE_ORDER) if self.space.dynamic else CHOICE_ORDER
        coords = [(layer, f) for layer in self.space.layers for f in fields]
        for _ in range(len(coords)):
            layer, field = coords[self.position % len(coords)]
            self.position += 1
            cur = self.incumbent[layer]
            seen = {config_key(self.incumbent)}
            configs = [dict(self.incumbent)]
            for step in STEPS:
                for value in (getattr(cur, field) - step, getattr(cur, field) + step):
                    if field == "tmax" and value not in self.space.tmax_range():
                        continue
                    moved = replace(cur, **{field: value})
                    codes = project(moved.t1, moved.v1, moved.t2, moved.v2, moved.tmax)
                    if getattr(codes, field) != value:
                        continue
                    cand = {**self.incumbent, layer: codes}
                    if config_key(cand) not in seen:
                        seen.add(config_key(cand))
                        configs.append(cand)
            if len(configs) > 1:
                return configs
        return [dict(self.incumbent)]

    def ask(self, episode: int) -> dict[str, LayerCodes]:
        if not self.pending:
            self.pending = self._round()
            self.results = []
        return self.pending[0]

    def ask_many(self, episode: int, n: int) -> list[dict[str, LayerCodes]]:
        """Up to ``n`` pending configs of the current round (a round is told all at once at its end)."""
        self.ask(episode)
        return self.pending[:n]

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        self.pending.pop(0)
        self.results.append((score.reward, config))
        if self.pending:
            return {}
        best_reward, self.incumbent = max(self.results, key=lambda r: r[0])
        return {"incumbent_reward": best_reward}

    def state_dict(self) -> dict[str, Any]:
        return {"incumbent": self.incumbent, "position": self.position, "pending": self.pending,
                "results": self.results}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.incumbent, self.position = state["incumbent"], state["position"]
        self.pending, self.results = state["pending"], state["results"]
