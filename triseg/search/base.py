"""What every search strategy shares: the episode batches with cached teacher outputs, the evaluator
(one reward, one budget counter), the top-k list, and the ask/tell strategy interface."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from triseg.approx.config import LayerCodes
from triseg.approx.losses import at_loss, attention_map
from triseg.approx.lut import int8_values, lookup_planes
from triseg.approx.student import BatchEditRecorder, Config, install
from triseg.data import Split, normalize
from triseg.hardware.cost import CostRecorder, consumers, multiplied_per_block
from triseg.recorder import attach


OBJECTIVES = ("reward", "savings")
GROUP_BYTES = 4 << 20  # batched scoring keeps each activation of a pass within this (cache-sized) budget


@dataclass(frozen=True)
class Score:
    """One student evaluation on an episode batch.

    ``distill`` = kd + attention_weight * at. With ``objective='reward'`` (the original) the reward is
    ``-distill``; with ``objective='savings'`` it is ``-(multiplies_left + savings_weight * distill)``,
    where ``multiplies_left`` is the student's real multiplies over the zero-skipping teacher's on the
    batch (the cost model's count, :mod:`triseg.hardware.cost`).
    """

    reward: float
    kd: float
    at: float
    distill: float | None = None
    multiplies_left: float | None = None


class EpisodeBatches:
    """Training batches in a fixed seeded order, with the teacher's logits and attention maps cached."""

    def __init__(self, teacher: nn.Module, split: Split, batch_size: int, attention_taps: list[str],
                 seed: int = 0) -> None:
        if len(split) < batch_size:
            raise ValueError(f"training split has {len(split)} images, fewer than one batch of {batch_size}")
        self.teacher, self.split, self.batch_size = teacher, split, batch_size
        self.attention_taps = attention_taps
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))
        self.num_batches = len(split) // batch_size
        self.order = order[: self.num_batches * batch_size].view(self.num_batches, batch_size)
        self._cache: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        self._normalized: torch.Tensor | None = None
        self._multiplies: dict[int, int] = {}

    def inputs(self, episode: int) -> torch.Tensor:
        """Normalised images of the batch used at ``episode``."""
        return self.inputs_many([episode])

    def inputs_many(self, episodes: Sequence[int]) -> torch.Tensor:
        """The batches of ``episodes`` one after the other, normalised in one pass (each channel's 256 byte
        values normalised once by :func:`normalize` itself, then looked up: the same floats)."""
        x = self.split.x[self.order[[e % self.num_batches for e in episodes]].flatten()]
        if x.device.type != "cpu":
            return normalize(x)
        if self._normalized is None:
            byte_values = torch.arange(256, dtype=torch.uint8).view(256, 1).expand(1, x.shape[1], 256, 1)
            self._normalized = normalize(byte_values)[0, :, :, 0]
        return lookup_planes(x, self._normalized)

    @torch.no_grad()
    def teacher_outputs(self, episode: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Teacher logits and attention maps for the batch of ``episode`` (computed once)."""
        b = episode % self.num_batches
        if b not in self._cache:
            recorder = install(self.teacher, {}, keep=set(self.attention_taps))
            logits = self.teacher(self.inputs(episode))
            maps = [attention_map(recorder.records[t].values) for t in self.attention_taps]
            attach(self.teacher, None)
            self._cache[b] = (logits, maps)
        return self._cache[b]

    @torch.no_grad()
    def teacher_multiplies(self, episode: int) -> int:
        """The zero-skipping teacher's real multiplies on the batch of ``episode`` (computed once)."""
        b = episode % self.num_batches
        if b not in self._multiplies:
            recorder = CostRecorder(self.teacher, {})
            attach(self.teacher, recorder)
            try:
                self.teacher(self.inputs(episode))
            finally:
                recorder.close()
                attach(self.teacher, None)
            self._multiplies[b] = recorder.multiplies()
        return self._multiplies[b]


class Evaluator:
    """Scores configs on episode batches with the student; counts evaluations (the budget).

    One :class:`BatchEditRecorder` serves the whole search: :meth:`score_many` runs K configs in one
    forward pass over K copies of the batch (or K different batches), each copy through its own maps,
    and each config's reward is computed on its own rows exactly as :meth:`score` computes it alone.
    """

    def __init__(self, model: nn.Module, batches: EpisodeBatches, T: float = 2.0,
                 attention_weight: float = 100.0, objective: str = "reward", savings_weight: float = 1.0) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        self.model, self.batches = model, batches
        self.T, self.attention_weight = T, attention_weight
        self.objective, self.savings_weight = objective, savings_weight
        self.evaluations = 0
        self.recorder = BatchEditRecorder(model, batches.attention_taps)
        previous = model.recorder
        attach(model, self.recorder)  # looks up the tap producers once; each pass then only sets model.recorder
        model.recorder = previous
        self._teacher_probs: dict[int, torch.Tensor] = {}

    def group_size(self, most: int) -> int:
        """How many configs to score in one pass: up to ``most``, while the largest activation of the K
        copies stays within :data:`GROUP_BYTES` (beyond it, on CPU, the LUT edits, dequantisation and
        attention maps fall out of the cache and a pass gets slower per config). 1 before the first pass."""
        largest = self.recorder.block_bytes
        return 1 if largest == 0 else max(1, min(most, GROUP_BYTES // largest))

    @torch.no_grad()
    def score(self, config: Config, episode: int) -> Score:
        """Reward of ``config`` on the batch of ``episode``."""
        return self.score_many([config], episode)[0]

    @torch.no_grad()
    def score_many(self, configs: Sequence[Config], episode: int | Sequence[int]) -> list[Score]:
        """Rewards of K configs from one forward pass, each equal to :meth:`score` of it alone.

        ``episode`` is one episode (its batch repeated K times) or one episode per config (each config
        on its own episode's batch, as a search scores them one at a time). Counts K evaluations.
        """
        episodes = [episode] * len(configs) if isinstance(episode, int) else list(episode)
        if len(episodes) != len(configs):
            raise ValueError(f"{len(configs)} configs but {len(episodes)} episodes")
        if not configs:
            return []
        rec, b = self.recorder, self.batches.batch_size
        counter = _CopyCounter(self.model, rec, configs) if self.objective == "savings" else None
        rec.set_configs(configs)
        self.model.recorder = rec
        try:
            logits = self.model(self.batches.inputs_many(episodes))
        finally:
            self.model.recorder = None
            if counter is not None:
                counter.close()
        maps = [student_attention(rec.raw[t]) for t in self.batches.attention_taps]
        rec.raw = {}
        self.evaluations += len(configs)
        scores = []
        for k, e in enumerate(episodes):
            rows = slice(k * b, (k + 1) * b)
            t_maps = self.batches.teacher_outputs(e)[1]
            kd = float(self._kd(logits[rows], e))
            at = float(at_loss([m[rows] for m in maps], t_maps))
            distill = kd + self.attention_weight * at
            if counter is None:
                scores.append(Score(-distill, kd, at, distill))
            else:
                left = counter.multiplies[k] / max(1, self.batches.teacher_multiplies(e))
                scores.append(Score(-(left + self.savings_weight * distill), kd, at, distill, left))
        return scores

    def _kd(self, student: torch.Tensor, episode: int) -> torch.Tensor:
        """:func:`kd_loss` against the batch's teacher, its softmax computed once per batch."""
        b = episode % self.batches.num_batches
        if b not in self._teacher_probs:
            self._teacher_probs[b] = F.softmax(self.batches.teacher_outputs(episode)[0] / self.T, 1)
        T = self.T
        return F.kl_div(F.log_softmax(student / T, 1), self._teacher_probs[b], reduction="batchmean") * T * T


def student_attention(x: torch.Tensor) -> torch.Tensor:
    """:func:`attention_map` of an activation; of an INT8 conv activation straight from its codes (the
    squares by one table lookup, then the same channel sum and normalisation: the same floats)."""
    if not x.is_quantized:
        return attention_map(x)
    if x.dim() != 4:
        return attention_map(int8_values(x))
    a = int8_values(x, squared=True).sum(1)
    return F.normalize(a.reshape(a.shape[0], -1), dim=1)


class _CopyCounter:
    """The cost model's multiplies (:class:`CostRecorder`) of each of the K copies in a batched pass.

    Same rule per copy: at every conv/linear input, operands that are zero are skipped, operands equal
    to v1/v2 of the producing tap's map in that copy are selected, the rest multiplied.
    """

    def __init__(self, model: nn.Module, recorder: BatchEditRecorder, configs: Sequence[Config]) -> None:
        self.recorder, self.configs = recorder, configs
        self.layer_of = {tap: layer for layer, tap in recorder.tap_of.items()}
        self.multiplies = [0] * len(configs)
        self.hooks = [module.register_forward_pre_hook(self._hook(key)) for _, module, key in consumers(model)]

    def _hook(self, key: tuple):
        def hook(module: nn.Module, args: tuple) -> None:
            scale = float(args[0].q_scale()) if args[0].is_quantized else float(module.s_in)
            source = next((self.layer_of[name] for name, s in reversed(self.recorder.seen)
                           if s == scale and name in self.layer_of), None)
            maps = [config.get(source) if source is not None else None for config in self.configs]
            for i, count in enumerate(multiplied_per_block(module, args[0], key, maps)):
                self.multiplies[i] += count
        return hook

    def close(self) -> None:
        for h in self.hooks:
            h.remove()


def config_key(config: Config) -> tuple:
    """A hashable identity of a config."""
    return tuple(sorted((k, (v.t1, v.v1, v.t2, v.v2, v.tmax)) for k, v in config.items()))


@dataclass(order=True)
class Candidate:
    """A config with the reward it earned and when."""

    reward: float
    episode: int = field(compare=False)
    config: Config = field(compare=False)
    score: Score = field(compare=False)


def candidates_state(cands: list[Candidate]) -> list[dict[str, Any]]:
    """Plain data of candidates (checkpoints)."""
    return [{"reward": c.reward, "episode": c.episode, "score": vars(c.score),
             "config": {k: vars(v) for k, v in c.config.items()}} for c in cands]


def candidates_from(state: list[dict[str, Any]]) -> list[Candidate]:
    """Candidates back from :func:`candidates_state`."""
    return [Candidate(s["reward"], s["episode"], {k: LayerCodes(**v) for k, v in s["config"].items()},
                      Score(**s["score"])) for s in state]


class TopK:
    """The k best distinct configs by reward."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[Candidate] = []
        self.keys: set[tuple] = set()

    def add(self, config: Config, score: Score, episode: int) -> None:
        key = config_key(config)
        if key in self.keys or self.k <= 0:
            return
        cand = Candidate(score.reward, episode, dict(config), score)
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, cand)
            self.keys.add(key)
        elif cand.reward > self.heap[0].reward:
            dropped = heapq.heapreplace(self.heap, cand)
            self.keys.discard(config_key(dropped.config))
            self.keys.add(key)

    def best(self) -> list[Candidate]:
        """Candidates, best first (ties broken by the earlier episode)."""
        return sorted(self.heap, key=lambda c: (-c.reward, c.episode))

    def state_dict(self) -> list[dict[str, Any]]:
        return candidates_state(self.heap)

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.heap = candidates_from(state)
        heapq.heapify(self.heap)
        self.keys = {config_key(c.config) for c in self.heap}


class Strategy(Protocol):
    """Ask/tell interface: propose a config, learn from its score; state round-trips for --resume.

    A strategy may also offer ``ask_many(episode, n) -> list[Config]``: 1 to n configs for the episodes
    from ``episode`` on that it would propose before learning from any of them (a PPO rollout between
    updates, a greedy round, random draws). The loop scores them in one forward pass and tells them in
    order, so the search is the same as one at a time.
    """

    name: str

    def ask(self, episode: int) -> Config: ...

    def tell(self, episode: int, config: Config, score: Score) -> dict[str, float]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class ParetoArchive:
    """The distinct configs no other config beats on both distillation loss and multiplies left.

    Used as the candidate list of the savings objective: it keeps the whole trade-off for the
    validation pass instead of the k best scalar rewards. Above ``k`` configs it drops, one at a time, the
    inner point whose neighbours are closest in multiplies left, so the ``k`` kept stay spread along the
    multiplies axis (both ends always) however densely a search samples one part of the front.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.front: list[Candidate] = []

    @staticmethod
    def _point(c: Candidate) -> tuple[float, float]:
        s = c.score
        return (s.distill if s.distill is not None else -s.reward,
                s.multiplies_left if s.multiplies_left is not None else 1.0)

    def add(self, config: Config, score: Score, episode: int) -> None:
        if self.k <= 0:
            return
        cand = Candidate(score.reward, episode, dict(config), score)
        d, m = self._point(cand)
        key = config_key(config)
        for c in self.front:
            cd, cm = self._point(c)
            if (cd <= d and cm <= m) or config_key(c.config) == key:
                return
        self.front = [c for c in self.front if not (d <= self._point(c)[0] and m <= self._point(c)[1])]
        self.front.append(cand)
        self.front.sort(key=lambda c: (self._point(c)[1], c.episode))
        while len(self.front) > max(self.k, 2):
            lefts = [self._point(c)[1] for c in self.front]
            del self.front[min(range(1, len(lefts) - 1), key=lambda i: (lefts[i + 1] - lefts[i - 1], i))]
        if self.k == 1:
            self.front = self.front[:1]

    def best(self) -> list[Candidate]:
        """The front, fewest multiplies left first."""
        return list(self.front)

    def state_dict(self) -> list[dict[str, Any]]:
        return candidates_state(self.front)

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.front = candidates_from(state)


def candidate_list(objective: str, k: int) -> TopK | ParetoArchive:
    """The candidates a search keeps for validation: the top-k by reward, or the Pareto front (savings)."""
    return ParetoArchive(k) if objective == "savings" else TopK(k)
