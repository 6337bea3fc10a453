"""PPO: masked sampling is always legal, updates move the policy, and --resume ends like a full run."""

from __future__ import annotations

import json

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triseg.approx.calibrate import LayerHistogram
from triseg.approx.config import validate
from triseg.cli import main
from triseg.search.base import Score
from triseg.search.ppo import PPOConfig, PPOStrategy
from triseg.search.space import SearchSpace


def _space(tmaxes: list[int], top: int = 127) -> SearchSpace:
    layers = [f"l{i}" for i in range(len(tmaxes))]
    hists = {layer: LayerHistogram(torch.ones(256, dtype=torch.long)) for layer in layers}
    feats = torch.rand(len(layers), 4, generator=torch.Generator().manual_seed(len(layers)))
    return SearchSpace(layers, dict(zip(layers, tmaxes)), {}, feats, hists, top)


@settings(max_examples=60, deadline=None)
@given(tmaxes=st.lists(st.integers(10, 127), min_size=1, max_size=6), seed=st.integers(0, 10_000))
def test_masked_sampling_is_always_legal(tmaxes, seed):
    strategy = PPOStrategy(_space(tmaxes), PPOConfig(), seed=seed)
    with torch.no_grad():  # sharpen the logits so that boundary codes get drawn too
        for head in strategy.policy.heads.values():
            head.bias.copy_(torch.randn(256, generator=torch.Generator().manual_seed(seed)) * 20)
    for episode in range(3):
        for layer, codes in strategy.ask(episode).items():
            validate(layer, codes, 127)


def test_update_moves_the_policy_towards_rewarded_actions():
    strategy = PPOStrategy(_space([40, 60]), PPOConfig(update_timestep=20, lr=0.05), seed=0)
    before = [p.clone() for p in strategy.policy.parameters()]
    for episode in range(20):
        cfg = strategy.ask(episode)
        reward = -abs(cfg["l0"].t1 - 2)  # prefer t1 = 2
        stats = strategy.tell(episode, cfg, Score(reward, 0.0, 0.0))
    assert set(stats) == {"policy_loss", "value_loss", "entropy"}
    assert any(not torch.equal(a, b) for a, b in zip(before, strategy.policy.parameters()))
    probs = torch.softmax(strategy.policy(strategy.space.features)[0]["t1"][0, 2:11], 0)
    assert probs[0] > 1 / 9, "t1 = 2 should now be likelier than uniform"


def _search(tmp_path, out, *extra):
    return main(["train_ppo_triseg", "--model", "lenet5", "--output-dir", str(out), "--episodes", "24",
                 "--update-timestep", "8", "--checkpoint-every", "4", "--calib-batches", "2", "--batch-size", "16",
                 "--top-k", "3", "--val-size", "48", "--result-file", "r.json", "--seed", "3", *extra])


def test_resume_ends_with_the_same_result(tmp_path):
    full, part = tmp_path / "full", tmp_path / "part"
    assert _search(tmp_path, full) == 0
    assert _search(tmp_path, part, "--stop-after", "12") == 0
    assert not (part / "tri_ppo_int_codes" / "r.json").exists()
    assert _search(tmp_path, part, "--resume") == 0
    a = json.loads((full / "tri_ppo_int_codes" / "r.json").read_text())
    b = json.loads((part / "tri_ppo_int_codes" / "r.json").read_text())
    assert a["layers"] == b["layers"] and a["metrics"] == b["metrics"]
    assert a["validation"]["candidates"] == b["validation"]["candidates"]
    ha = json.loads((full / "tri_ppo_int_codes" / "r.history.json").read_text())
    hb = json.loads((part / "tri_ppo_int_codes" / "r.history.json").read_text())
    assert [h["reward"] for h in ha] == [h["reward"] for h in hb] and len(ha) == 24
    assert set(a) >= {"layers", "backend", "model", "selection", "metrics"}
    assert set(a["metrics"]) == {"acc_teacher", "acc_student", "acc_drop"}
    assert a["selection"].startswith(("constrained-best", "unconstrained-best"))
