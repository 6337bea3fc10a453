"""The tmax ladder: a savings-first greedy climb over per-layer tmax, with exact minimum-MSE maps.

Multiplies are left only where an activation code is above its layer's tmax (codes in (0, tmax] become
0, v1 or v2: a skip or a select). So the savings are decided by tmax, and for a given tmax the exact
minimum-MSE map (:mod:`triseg.search.exact_mse`) is a good map at no evaluation cost. Each layer gets a
ladder of rungs: tmax at rising percentiles of its non-zero calibration codes (``PERCENTILES``,
duplicates dropped, clamped to the legal range), each with its exact-MSE map.

The climb starts with every layer on its first rung and scores, for every layer, the incumbent with
that layer one rung up. It takes the move that removes the most multiplies per unit of distillation
loss it adds (a move that adds none first, the largest saving among those). After a move it scores
the moved layer's next rung and re-scores only the move that looks best on an older score, until the
best move is one scored against the current incumbent (lazy greedy: a move's worth changes little
when another layer moves, so a step costs about two evaluations instead of one per layer). Every
config scored goes into the Pareto archive; the job's savings selection then picks on validation.

The climb compares moves with each other and with the incumbent, so they must see the same images:
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


def _key(saving: float, added: float) -> tuple[int, float]:
    """Order of moves: a move that adds no loss first (most saving), then saving per added loss."""
    return (1, saving) if added <= 0 else (0, saving / added)


class LadderStrategy:
    """Lazy greedy climb: ``ask`` returns the configs whose scores the next decision needs, one by one."""

    name = "ladder"

    def __init__(self, space: SearchSpace, cfg: LadderConfig | None = None) -> None:
        self.space, self.cfg = space, cfg or LadderConfig()
        self.ladders = {layer: rungs(space, layer) for layer in space.layers}
        self.rung = {layer: 0 for layer in space.layers}
        self.incumbent: tuple[float, float] | None = None  # (distill, multiplies left) of the current config
        self.start_distill: float | None = None
        self.moves = 0  # moves taken so far
        # per layer, its next rung's last score: (saving, added loss) against the incumbent of then,
        # (distill, multiplies left) of the moved config, and the move count it was measured at
        self.measured: dict[str, tuple[float, float, float, float, int]] = {}
        self.pending: list[str | None] = [None]  # None: score the incumbent itself
        self.done = False

    def config(self, rung: dict[str, int] | None = None) -> dict[str, LayerCodes]:
        """The config of the given rungs (default: the incumbent's)."""
        rung = rung or self.rung
        return {layer: self.ladders[layer][r] for layer, r in rung.items()}

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
            self.start_distill = score.distill
        else:
            assert self.incumbent is not None
            d, m = self.incumbent
            self.measured[layer] = (m - score.multiplies_left, score.distill - d, score.distill,
                                    score.multiplies_left, self.moves)
        if not self.pending:
            self._decide()
        return {"rungs_climbed": float(sum(self.rung.values()))}

    def _decide(self) -> None:
        """Take the best move once its score is fresh; else ask for what is missing or stale.

        Every movable layer's next rung is scored once; after a move only the best-looking stale move
        is re-scored (lazy greedy: a move's worth changes little when another layer moves), until
        the best move is one scored against the current incumbent.
        """
        while True:
            movable = [k for k in self.space.layers if self.rung[k] + 1 < len(self.ladders[k])]
            limit = self.cfg.stop_distill * max(self.start_distill or 0.0, 1e-12)
            if not movable or self.incumbent is None or self.incumbent[0] > limit:
                self.done = True
                return
            missing = [k for k in movable if k not in self.measured]
            if missing:
                self.pending = missing
                return
            best = max(movable, key=lambda k: (_key(*self.measured[k][:2]), -movable.index(k)))
            saving, added, d, m, at = self.measured.pop(best)
            if at != self.moves:
                self.measured[best] = (saving, added, d, m, at)
                self.pending = [best]
                return
            self.rung[best] += 1
            self.incumbent = (d, m)
            self.moves += 1

    def state_dict(self) -> dict[str, Any]:
        return {"rung": self.rung, "incumbent": self.incumbent, "start_distill": self.start_distill,
                "moves": self.moves, "measured": self.measured, "pending": self.pending, "done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rung, self.incumbent = dict(state["rung"]), state["incumbent"]
        self.start_distill, self.moves = state["start_distill"], state["moves"]
        self.measured, self.pending = dict(state["measured"]), list(state["pending"])
        self.done = state["done"]
