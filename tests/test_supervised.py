"""The supervised method: the soft map equals the hard map, STE passes gradients, the mode writes a legal config."""

from __future__ import annotations

import json

import pytest
import torch

from triseg.approx.config import LayerCodes, validate
from triseg.approx.intsim import simulate
from triseg.approx.lut import map_codes
from triseg.approx.student import install
from triseg.cli import main
from triseg.data import normalize
from triseg.recorder import attach
from triseg.search.legal import decode
from triseg.search.supervised import SoftMaps, SoftTriSegment, STERound, ste_round


pytestmark = pytest.mark.usefixtures("one_thread")


def random_codes(gen: torch.Generator) -> LayerCodes:
    return decode(*torch.rand(4, generator=gen).tolist(), int(torch.randint(10, 256, (1,), generator=gen)))


@pytest.mark.parametrize("beta", [None, 0.01])
def test_soft_map_equals_hard_map_on_integer_codes(beta) -> None:
    gen = torch.Generator().manual_seed(0)
    codes = torch.arange(-20, 256, dtype=torch.float32)
    for _ in range(50):
        c = random_codes(gen)
        y, _ = SoftTriSegment.from_codes(c)(codes, beta)
        hard = map_codes(codes.long(), c).float()
        assert torch.equal(y, hard) if beta is None else torch.allclose(y, hard, atol=1e-4), c
        assert SoftTriSegment.from_codes(c).legal(255) == c


def test_soft_map_is_soft_at_high_temperature() -> None:
    c = LayerCodes(4, 10, 20, 30, 40)
    y, cov = SoftTriSegment.from_codes(c)(torch.tensor([4.0, 5.0]), 1.0)
    assert 0 < y[0] < 10 and 0 < y[1] < 10 and 0 < cov <= 1


def test_legal_projection_of_any_parameters() -> None:
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        tmax = float(torch.randint(0, 300, (1,), generator=gen))
        m = SoftTriSegment.from_tmax(tmax, learn_tmax=bool(torch.rand((), generator=gen) < 0.5))
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn((), generator=gen) * 50)
        validate("x", m.legal(255), 255)
        if m.fixed_tmax is not None:
            assert m.legal(255).tmax == min(255, max(10, round(tmax)))


def test_ste_round() -> None:
    x = torch.tensor([0.4, 1.6], requires_grad=True)
    ste_round(x).sum().backward()
    assert torch.equal(ste_round(x.detach()), torch.tensor([0.0, 2.0])) and torch.equal(x.grad, torch.ones(2))


def test_sim_with_soft_maps_matches_int8_and_ste_passes_gradients(lenet_int8, sample) -> None:
    int8, _, _ = lenet_int8
    x = normalize(sample.train.x[:16])
    config = {"conv1": LayerCodes(3, 5, 9, 14, 20), "conv2": LayerCodes(2, 8, 12, 20, 30),
              "fc1": LayerCodes(2, 4, 8, 11, 15), "fc2": LayerCodes(2, 5, 8, 10, 12)}
    install(int8, config)
    with torch.no_grad():
        expected = int8(x)
    attach(int8, None)
    sim = simulate(int8)
    maps = SoftMaps({k: SoftTriSegment.from_codes(c) for k, c in config.items()})
    attach(sim, maps.recorder(sim))
    maps.beta = None
    with STERound():
        hard = sim(x)
    assert torch.equal(hard.float(), expected)  # STE leaves the forward pass bit-exact
    maps.beta = 1.0
    with STERound():
        sim(x).float().logsumexp(1).sum().backward()
    grads = {k: maps[k].v1.grad for k in config}
    assert all(g is not None and g != 0 for g in grads.values())
    for p in maps.parameters():
        p.grad = None
    maps.coverage.clear()
    out = sim(x)  # without STE the simulation's rounding blocks every gradient
    out.float().logsumexp(1).sum().backward()
    assert all(maps[k].v1.grad is None or maps[k].v1.grad == 0 for k in config)
    attach(sim, None)


def test_mode_writes_a_legal_config_eval_accepts(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["train_supervised_triseg", "--model", "lenet5", "--output-dir", str(out), "--workers", "1",
               "--epochs", "2", "--steps-per-epoch", "2", "--log-every", "1", "--calib-batches", "2",
               "--batch-size", "32", "--result-file", "s.json"])
    assert rc == 0
    result = json.loads((out / "tri_ppo_int_codes" / "s.json").read_text())
    assert result["search"] == "supervised" and result["gradient_steps"] == 4
    for layer, codes in result["layers"].items():
        validate(layer, LayerCodes.from_json(layer, codes), 255)
    history = json.loads((out / "tri_ppo_int_codes" / "s.supervised.json").read_text())["history"]
    assert len(history) == 4 and set(history[0]["grad_norm"]) == set(result["layers"])
    assert any(v > 0 for v in history[0]["grad_norm"].values())
    rc = main(["eval_ppo_int8", "--model", "lenet5", "--output-dir", str(out), "--workers", "1",
               "--config-path", str(out / "tri_ppo_int_codes" / "s.json")])
    assert rc == 0 and "drop" in capsys.readouterr().out


def test_training_is_seeded_and_moves_codes(lenet_int8, sample) -> None:
    from triseg.search.space import build_space
    from triseg.search.supervised import SupervisedConfig, train_supervised

    int8, _, _ = lenet_int8
    space = build_space(int8, sample.train, 2, 32, 255)
    sim = simulate(int8)
    settings = SupervisedConfig(epochs=2, steps_per_epoch=3, log_every=1, lr=0.5)
    a = train_supervised(sim, space, sample.train, settings, batch_size=32, teacher=int8)
    b = train_supervised(sim, space, sample.train, settings, batch_size=32, teacher=int8)
    assert a.history == b.history and a.epoch_configs == b.epoch_configs and a.steps == 6
    first, last = a.history[0]["codes"], a.history[-1]["codes"]
    assert any(first[k] != last[k] for k in first)


def test_training_stops_with_an_error_when_the_loss_is_not_finite(lenet_int8, sample) -> None:
    from triseg.errors import TrisegError
    from triseg.search.space import build_space
    from triseg.search.supervised import SupervisedConfig, train_supervised

    class NanTeacher(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.full((x.shape[0], 10), float("nan"))

    int8, _, _ = lenet_int8
    space = build_space(int8, sample.train, 2, 32, 255)
    with pytest.raises(TrisegError, match=r"diverged \(loss nan\) at step 1"):
        train_supervised(simulate(int8), space, sample.train, SupervisedConfig(epochs=1, steps_per_epoch=2),
                         batch_size=32, teacher=NanTeacher())
