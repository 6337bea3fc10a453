"""PPO warm-started at the exact minimum-MSE config.

Before the search, the policy is fitted to the exact-MSE actions by a few Adam steps of behaviour
cloning (maximising their masked log-probability) until the geometric mean probability per head
and layer reaches ``target_prob``; then PPO runs unchanged from there with a fresh optimizer.
"""

from __future__ import annotations

import torch

from triseg.search.exact_mse import exact_mse_config
from triseg.search.ppo import PPOConfig, PPOStrategy, evaluate_actions
from triseg.search.space import SearchSpace

MAX_CLONE_STEPS = 1000


class WarmPPOStrategy(PPOStrategy):
    """PPOStrategy whose initial policy already proposes the exact-MSE codes with high probability."""

    name = "ppo-warm"

    def __init__(self, space: SearchSpace, cfg: PPOConfig, seed: int = 0, target_prob: float = 0.8,
                 clone_lr: float = 1e-2) -> None:
        super().__init__(space, cfg, seed)
        start = exact_mse_config(space)
        actions = torch.tensor([[[start[layer].t1, start[layer].t2, start[layer].v1, start[layer].v2]
                                 for layer in space.layers]])
        opt = torch.optim.Adam(self.policy.parameters(), lr=clone_lr)
        self.clone_steps = 0
        for self.clone_steps in range(MAX_CLONE_STEPS):
            logp = evaluate_actions(self.policy, space.features, self.tmax, actions)[0][0]
            self.start_prob = float(torch.exp(logp.detach() / actions.numel()))
            if self.start_prob >= target_prob:
                break
            opt.zero_grad()
            (-logp).backward()
            opt.step()
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr)
