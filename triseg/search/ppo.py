"""The original tool's PPO search, top to bottom in one file.

Each episode the policy picks (t1, t2, v1, v2) for every layer from four heads of 256 logits,
masked and sampled in the order t1 -> t2 -> v1 -> v2 so that every action is legal for the layer's
tmax. The state of a layer is SimpleStateEncoder's four numbers (depth ratio, mean/255, std/128,
p90/255 of its calibration codes). An episode is one step, so every step is terminal and the
discounted return equals the reward (gamma is kept as a knob for fidelity to the original).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.distributions import Categorical

from triseg.approx.config import CHOICE_ORDER, MIN_TMAX, T1_MAX, T1_MIN, T1_TMAX_GAP, T2_T1_GAP, T2_TMAX_GAP, LayerCodes
from triseg.options import Options, between, option
from triseg.search.base import Score
from triseg.search.space import SearchSpace

NUM_LOGITS = 256
HEADS = CHOICE_ORDER
DYNAMIC_HEADS = ("tmax", *CHOICE_ORDER)  # with a searched tmax, it is chosen first and bounds the others


def heads_for(dynamic_tmax: bool) -> tuple[str, ...]:
    """The policy's heads in sampling order."""
    return DYNAMIC_HEADS if dynamic_tmax else HEADS


@dataclass
class PPOConfig(Options):
    """PPO hyperparameters (the original tool's defaults)."""

    lr: float = option(3e-4, "Adam learning rate", check=between(0, 1, low_open=True))
    gamma: float = option(0.99, "discount (one-step episodes: no effect)", check=between(0, 1))
    eps_clip: float = option(0.2, "clip range of the surrogate", check=between(0, 1, low_open=True))
    k_epochs: int = option(4, "PPO epochs per update", check=between(1, 1000))
    update_timestep: int = option(50, "episodes per PPO update", check=between(1, 1_000_000))
    value_coef: float = option(0.5, "value-loss coefficient", check=between(0, 1000))
    entropy_coef: float = option(0.01, "entropy coefficient", check=between(0, 1000))
    hidden: int = option(64, "hidden units of the policy network", check=between(1, 4096))


class ActorCritic(nn.Module):
    """Shared trunk, four actor heads of 256 logits (t1, t2, v1, v2) and a critic head."""

    def __init__(self, state_dim: int = 4, hidden: int = 64, heads: tuple[str, ...] = HEADS) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(state_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.heads = nn.ModuleDict({h: nn.Linear(hidden, NUM_LOGITS) for h in heads})
        self.critic = nn.Linear(hidden, 1)

    def forward(self, states: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-layer logits of each head, and the episode value (critic on the mean trunk feature)."""
        z = self.trunk(states)
        return {h: head(z) for h, head in self.heads.items()}, self.critic(z.mean(0)).squeeze(-1)


_CODES = torch.arange(NUM_LOGITS)[None, :]


def _between(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """(L, 256) mask of codes in [lo, hi] per layer."""
    return (_CODES >= lo[:, None]) & (_CODES <= hi[:, None])


def masks(head: str, tmax: torch.Tensor, t1: torch.Tensor | None = None,
          t2: torch.Tensor | None = None) -> torch.Tensor:
    """The legal codes of one head given tmax and the codes chosen before it.

    For the ``tmax`` head itself, ``tmax`` is the upper bound (the backend's top code).
    """
    if head == "tmax":
        return _between(torch.full_like(tmax, MIN_TMAX), tmax)
    if head == "t1":
        return _between(torch.full_like(tmax, T1_MIN), torch.clamp(tmax - T1_TMAX_GAP, max=T1_MAX))
    if head == "t2":
        return _between(t1 + T2_T1_GAP, tmax - T2_TMAX_GAP)
    if head == "v1":
        return _between(t1 + 1, t2 - 1)
    return _between(t2 + 1, tmax)


def _dist(logits: torch.Tensor, mask: torch.Tensor) -> Categorical:
    return Categorical(logits=logits.masked_fill(~mask, float("-inf")), validate_args=False)


def evaluate_actions(policy: ActorCritic, states: torch.Tensor, tmax: torch.Tensor, actions: torch.Tensor,
                     heads: tuple[str, ...] = HEADS) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Joint log-probability and entropy of E episodes' actions (E, L, len(heads)), and the value.

    ``tmax`` is each layer's fixed tmax, or with a ``tmax`` head the upper bound of its choice. The
    state is the same every episode, so one policy forward serves the whole buffer.
    """
    logits, value = policy(states)
    e, num_layers = actions.shape[:2]
    flat = actions.reshape(e * num_layers, len(heads))
    bound = tmax.repeat(e)
    tm = flat[:, heads.index("tmax")] if "tmax" in heads else bound
    t1, t2 = flat[:, heads.index("t1")], flat[:, heads.index("t2")]
    logp, ent = torch.zeros(e), torch.zeros(e)
    for i, head in enumerate(heads):
        d = _dist(logits[head].repeat(e, 1), masks(head, bound if head == "tmax" else tm, t1, t2))
        logp = logp + d.log_prob(flat[:, i]).view(e, num_layers).sum(1)
        ent = ent + d.entropy().view(e, num_layers).sum(1)
    return logp, ent, value.expand(e)


class PPOStrategy:
    """Ask/tell PPO: ``ask`` samples a legal config, ``tell`` stores the reward and updates every N."""

    name = "ppo"

    def __init__(self, space: SearchSpace, cfg: PPOConfig, seed: int = 0) -> None:
        self.space, self.cfg = space, cfg
        self.heads = heads_for(space.dynamic)
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.policy = ActorCritic(space.features.shape[1], cfg.hidden, self.heads)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
        self.gen = torch.Generator().manual_seed(seed)
        self.tmax = (torch.full((len(space.layers),), space.top_code) if space.dynamic
                     else torch.tensor([space.tmax[layer] for layer in space.layers]))
        self.buffer: dict[str, list] = {"actions": [], "logp": [], "values": [], "rewards": []}

    @torch.no_grad()
    def ask(self, episode: int) -> dict[str, LayerCodes]:
        return self.ask_many(episode, 1)[0]

    @torch.no_grad()
    def ask_many(self, episode: int, n: int) -> list[dict[str, LayerCodes]]:
        """Up to ``n`` configs of the rollout before the next update (the policy is the same for all, so
        are its logits and the first head's distribution, whose mask depends on nothing chosen)."""
        m = max(1, min(n, self.cfg.update_timestep - len(self.buffer["rewards"])))
        logits, value = self.policy(self.space.features)
        first = self._log_probs(logits, self.heads[0], {})
        return [self._sample(logits, value, first) for _ in range(m)]

    def _log_probs(self, logits: dict[str, torch.Tensor], head: str,
                   chosen: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked log-probabilities of ``head`` given the codes chosen before it, and the probabilities."""
        tm = self.tmax if head == "tmax" else chosen.get("tmax", self.tmax)
        mask = masks(head, tm, chosen.get("t1"), chosen.get("t2"))
        log_probs = torch.log_softmax(logits[head].masked_fill(~mask, float("-inf")), 1)
        return log_probs, log_probs.exp()

    def _sample(self, logits: dict[str, torch.Tensor], value: torch.Tensor,
                first: tuple[torch.Tensor, torch.Tensor]) -> dict[str, LayerCodes]:
        """One legal config from the policy's logits (buffered with its log-probability and value)."""
        chosen: dict[str, torch.Tensor] = {}
        logp = torch.zeros(())
        for head in self.heads:
            log_probs, probs = first if head == self.heads[0] else self._log_probs(logits, head, chosen)
            chosen[head] = torch.multinomial(probs, 1, generator=self.gen).squeeze(1)
            logp = logp + log_probs.gather(1, chosen[head][:, None]).sum()
        actions = torch.stack([chosen[h] for h in self.heads], 1)
        self.buffer["actions"].append(actions)
        self.buffer["logp"].append(logp)
        self.buffer["values"].append(value)
        tmax = chosen.get("tmax", self.tmax)
        return {layer: LayerCodes(**{h: int(a[i]) for i, h in enumerate(CHOICE_ORDER, len(self.heads) - 4)},
                                  tmax=int(tm))
                for layer, a, tm in zip(self.space.layers, actions, tmax)}

    def tell(self, episode: int, config: dict[str, LayerCodes], score: Score) -> dict[str, float]:
        self.buffer["rewards"].append(score.reward)
        if len(self.buffer["rewards"]) >= self.cfg.update_timestep:
            return self.update()
        return {}

    def update(self) -> dict[str, float]:
        """K epochs of the clipped surrogate on the buffer; returns the losses."""
        # Every one-step episode is terminal, so its discounted return (any gamma) is its reward.
        returns_t = torch.tensor(self.buffer["rewards"], dtype=torch.float32)
        old_logp = torch.stack(self.buffer["logp"])
        old_values = torch.stack(self.buffer["values"])
        adv = returns_t - old_values
        adv = (adv - adv.mean()) / (adv.std() + 1e-8) if len(adv) > 1 else adv * 0
        stats: dict[str, float] = {}
        actions = torch.stack(self.buffer["actions"])
        for _ in range(self.cfg.k_epochs):
            logp, ent, value = evaluate_actions(self.policy, self.space.features, self.tmax, actions, self.heads)
            ratio = torch.exp(logp - old_logp)
            surr = torch.min(ratio * adv, torch.clamp(ratio, 1 - self.cfg.eps_clip, 1 + self.cfg.eps_clip) * adv)
            value_loss = (value - returns_t).pow(2).mean()
            loss = -surr.mean() + self.cfg.value_coef * value_loss - self.cfg.entropy_coef * ent.mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            stats = {"policy_loss": -surr.mean().item(), "value_loss": value_loss.item(), "entropy": ent.mean().item()}
        self.buffer = {k: [] for k in self.buffer}
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(),
                "gen": self.gen.get_state(), "buffer": self.buffer, "cfg": asdict(self.cfg)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["gen"])
        self.buffer = state["buffer"]
