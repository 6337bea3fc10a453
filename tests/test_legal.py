"""Legality in one place: PPO's masks, the optuna decoder, projection and the config ranges agree."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triseg.approx.config import t1_range, t2_range, v1_range, v2_range, validate
from triseg.search.legal import decode, pick, project
from triseg.search.ppo import masks

TMAX = st.integers(10, 255)
UNIT = st.floats(0.0, 1.0, allow_nan=False)


def allowed(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask[0]).flatten().tolist()


@settings(max_examples=200, deadline=None)
@given(TMAX, UNIT, UNIT)
def test_ppo_masks_equal_the_config_ranges(tmax: int, u1: float, u2: float) -> None:
    tm = torch.tensor([tmax])
    assert allowed(masks("t1", tm)) == list(t1_range(tmax))
    t1 = pick(t1_range(tmax), u1)
    assert allowed(masks("t2", tm, torch.tensor([t1]))) == list(t2_range(t1, tmax))
    t2 = pick(t2_range(t1, tmax), u2)
    assert allowed(masks("v1", tm, torch.tensor([t1]), torch.tensor([t2]))) == list(v1_range(t1, t2))
    assert allowed(masks("v2", tm, torch.tensor([t1]), torch.tensor([t2]))) == list(v2_range(t2, tmax))


@settings(max_examples=300, deadline=None)
@given(UNIT, UNIT, UNIT, UNIT, TMAX)
def test_decoded_configs_are_legal(u1: float, u2: float, u3: float, u4: float, tmax: int) -> None:
    validate("layer", decode(u1, u2, u3, u4, tmax), 255)


@settings(max_examples=100, deadline=None)
@given(TMAX)
def test_the_decoder_reaches_every_legal_code(tmax: int) -> None:
    r = t1_range(tmax)
    assert {pick(r, (i + 0.5) / len(r)) for i in range(len(r))} == set(r)
    assert pick(r, 0.0) == r.start and pick(r, 1.0) == r.stop - 1


@settings(max_examples=300, deadline=None)
@given(st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), st.floats(-1e3, 1e3), TMAX)
def test_projection_is_legal_and_keeps_legal_codes(t1: float, v1: float, t2: float, v2: float, tmax: int) -> None:
    c = project(t1, v1, t2, v2, tmax)
    validate("layer", c, 255)
    assert project(c.t1, c.v1, c.t2, c.v2, tmax) == c
