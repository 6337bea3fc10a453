"""PPO warm-started at the exact minimum-MSE config.

Before the search, the policy is fitted to the exact-MSE actions by a few Adam steps of behaviour
cloning (maximising their masked log-probability) until the geometric mean probability per head
and layer reaches ``target_prob``; then PPO runs unchanged from there with a fresh optimizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from triseg.options import Options, option
from triseg.search.exact_mse import exact_mse_config
from triseg.search.ppo import PPOConfig, PPOStrategy, evaluate_actions
from triseg.search.space import SearchSpace

MAX_CLONE_STEPS = 1000


def _probability(v: object) -> str | None:
    return None if isinstance(v, (int, float)) and 0 < v < 1 else "must be in (0, 1)"


@dataclass
class WarmConfig(Options):
    """How strongly ppo-warm's initial policy prefers the exact-MSE codes."""

    warm_prob: float = option(0.8, "ppo-warm: per-code probability of the exact-MSE codes at the start",
                              check=_probability)


class WarmPPOStrategy(PPOStrategy):
    """PPOStrategy whose initial policy already proposes the exact-MSE codes with high probability."""

    name = "ppo-warm"

    def __init__(self, space: SearchSpace, cfg: PPOConfig, seed: int = 0, target_prob: float = 0.8,
                 clone_lr: float = 1e-2) -> None:
        super().__init__(space, cfg, seed)
        start = exact_mse_config(space)
        actions = torch.tensor([[[getattr(start[layer], h) for h in self.heads] for layer in space.layers]])
        opt = torch.optim.Adam(self.policy.parameters(), lr=clone_lr)
        self.clone_steps = 0
        for self.clone_steps in range(MAX_CLONE_STEPS):
            logp = evaluate_actions(self.policy, space.features, self.tmax, actions, self.heads)[0][0]
            self.start_prob = float(torch.exp(logp.detach() / actions.numel()))
            if self.start_prob >= target_prob:
                break
            opt.zero_grad()
            (-logp).backward()
            opt.step()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
