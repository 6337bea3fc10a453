"""The tmax ladder: a savings-first greedy climb over per-layer tmax, with exact minimum-MSE maps.

Multiplies are left only where an activation code is above its layer's tmax (codes in (0, tmax] become
0, v1 or v2: a skip or a select). So the savings are decided by tmax, and for a given tmax the exact
minimum-MSE map (:mod:`triseg.search.exact_mse`) is a good map at no evaluation cost. Each layer gets a
ladder of rungs: tmax at rising percentiles of its non-zero calibration codes (``PERCENTILES``,
duplicates dropped, clamped to the legal range), each with its exact-MSE map.

The climb starts with every layer on its first rung. A round proposes, for every layer not at the top,
the incumbent with that layer one rung up; the move taken is the one that removes the most multiplies
per unit of distillation loss it adds (a move that adds none is taken first, the largest saving
among those). Every config the climb visits lies on its path from few savings to many; the job's
savings selection then picks, on validation, the last point of the path within the drop limit.

A round compares its moves with each other and with the incumbent, so they must see the same images:
use it with ``--episode-images N`` (every episode on one fixed slice of N training images).
The climb ends when every layer is at the top or the incumbent's distillation loss exceeds
``stop_distill`` times its starting value; ``done`` then ends the search loop before the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from triseg.approx.calibrate import percentile
from triseg.approx.config import MIN_TMAX, LayerCodes
from triseg.options import Options, between, option
from triseg.search.base import Score
from triseg.search.exact_mse import exact_mse_codes
from triseg.search.space import SearchSpace

PERCENTILES = (50, 60, 70, 80, 85, 90, 93, 95, 96, 97, 98, 98.5, 99, 99.3, 99.5, 99.7, 99.85, 99.95, 100)


@dataclass
class LadderConfig(Options):
    """Settings of the tmax ladder."""

    stop_distill: float = option(50.0, "ladder: end the climb when the distillation loss exceeds this multiple "
                                       "of its value at the first rung", check=between(1, 1e6, low_open=True))


def rungs(space: SearchSpace, layer: str) -> list[LayerCodes]:
    """The layer's ladder: exact-MSE maps at tmax = each percentile of its non-zero codes (distinct, legal)."""
    hist = space.histograms[layer]
    tmaxes = sorted({max(MIN_TMAX, min(space.top_code, percentile(hist.nonzero(), p))) for p in PERCENTILES})
    return [exact_mse_codes(hist.counts, t)[0] for t in tmaxes]


def _better(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether move ``a`` = (saving, added loss) beats ``b``: free moves first, then saving per added loss."""
    def key(m: tuple[float, float]) -> tuple[int, float]:
        saving, added = m
        return (1, saving) if added <= 0 else (0, saving / added)

    return key(a) > key(b)


class LadderStrategy:
    """Greedy climb; ``ask`` returns the pending configs of the current round one by one."""

    name = "ladder"

    def __init__(self, space: SearchSpace, cfg: LadderConfig | None = None) -> None:
        self.space, self.cfg = space, cfg or LadderConfig()
        self.ladders = {layer: rungs(space, layer) for layer in space.layers}
        self.rung = {layer: 0 for layer in space.layers}
        self.incumbent: tuple[float, float] | None = None  # (distill, multiplies left) of the current config
        self.start_distill: float | None = None
        self.pending: list[str | None] = [None]  # None: score the incumbent itself
        self.results: list[tuple[str, float, float]] = []
        self.done = False

    def config(self, rung: dict[str, int] | None = None) -> dict[str, LayerCodes]:
        """The config of the given rungs (default: the incumbent's)."""
        rung = rung or self.rung
        return {layer: self.ladders[layer][r] for layer, r in rung.items()}

    def _moves(self) -> list[str | None]:
        return [layer for layer in self.space.layers if self.rung[layer] + 1 < len(self.ladders[layer])]

    def ask(self, episode: int) -> dict[str, LayerCodes]:
        if self.done or not self.pending:
            return self.config()
        layer = self.pending[0]
        return self.config(self.rung if layer is None else {**self.rung, layer: self.rung[layer] + 1})

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        if self.done or not self.pending:
            return {}
        if score.distill is None or score.multiplies_left is None:
            raise ValueError("the ladder needs the savings objective's scores (distill and multiplies left)")
        layer = self.pending.pop(0)
        if layer is None:
            self.incumbent = (score.distill, score.multiplies_left)
            self.start_distill = score.distill if self.start_distill is None else self.start_distill
        else:
            self.results.append((layer, score.distill, score.multiplies_left))
        if self.pending:
            return {}
        if self.results:
            self._take_best()
        self.results = []
        limit = self.cfg.stop_distill * max(self.start_distill or 0.0, 1e-12)
        self.pending = self._moves()
        self.done = not self.pending or self.incumbent is None or self.incumbent[0] > limit
        return {"rungs_climbed": float(sum(self.rung.values()))}

    def _take_best(self) -> None:
        assert self.incumbent is not None
        distill, left = self.incumbent
        best = None
        for layer, d, m in self.results:
            move = (left - m, d - distill)
            if best is None or _better(move, best[0]):
                best = (move, layer, d, m)
        assert best is not None
        _, layer, d, m = best
        self.rung[layer] += 1
        self.incumbent = (d, m)

    def state_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "incumbent": self.incumbent, "start_distill": self.start_distill,
                "pending": self.pending, "results": self.results, "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rung, self.incumbent = dict(state["rung"]), state["incumbent"]
        self.start_distill, self.pending = state["start_distill"], list(state["pending"])
        self.results, self.done = list(state["results"]), state["done"]
