"""The savings objective: searched tmax, the Pareto archive, the fewest-multiplies selection, end to end."""

from __future__ import annotations

import io
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from triseg import api
from triseg.approx.calibrate import LayerHistogram
from triseg.approx.config import MIN_TMAX, LayerCodes, validate
from triseg.search.base import ParetoArchive, Score
from triseg.search.registry import build_strategy
from triseg.search.select import pareto_rows
from triseg.search.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")
DYNAMIC = ["ppo", "ppo-warm", "random", "tpe", "cmaes", "greedy"]


def dynamic_space() -> SearchSpace:
    gen = torch.Generator().manual_seed(0)
    tmax = {"a": 10, "b": 40, "c": 90}
    hists = {k: LayerHistogram(torch.randint(0, 100, (256,), generator=gen)) for k in tmax}
    return SearchSpace(list(tmax), tmax, {}, torch.rand(3, 4, generator=gen), hists, 127, dynamic=True)


def savings_score(config: dict[str, LayerCodes], episode: int) -> Score:
    """Fewer multiplies for larger tmax, more distillation loss for coarse maps."""
    left = sum(1 - c.tmax / 127 for c in config.values()) / len(config)
    distill = sum((c.v2 - (c.t2 + c.tmax) / 2) ** 2 for c in config.values()) / 1000
    return Score(-(left + distill), distill, 0.0, distill, left)


@pytest.mark.parametrize("name", DYNAMIC)
def test_searched_tmax_is_legal_varied_and_resumable(name: str) -> None:
    space = dynamic_space()
    cfg = api.SearchConfig(search=name, ppo=api.PPOConfig(update_timestep=10 if name.startswith("ppo") else 50))

    def drive(strategy, start: int, stop: int) -> list:
        out = []
        for episode in range(start, stop):
            config = strategy.ask(episode)
            strategy.tell(episode, config, savings_score(config, episode))
            out.append(tuple(sorted((k, tuple(vars(v).values())) for k, v in config.items())))
        return out

    full = drive(build_strategy(space, cfg), 0, 40)
    tmaxes = set()
    for config in full:
        for layer, (t1, v1, t2, v2, tmax) in config:
            validate(layer, LayerCodes(t1, v1, t2, v2, tmax), 127)
            assert MIN_TMAX <= tmax <= 127
            tmaxes.add(tmax)
    if name != "ppo-warm":  # ppo-warm starts concentrated on the rule's tmax by design
        assert len(tmaxes) > 3, "tmax must be searched"
    first = build_strategy(space, cfg)
    head = drive(first, 0, 25)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = build_strategy(space, cfg)
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    assert head + drive(resumed, 25, 40) == full


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=60), st.integers(2, 12))
def test_pareto_archive_is_a_non_dominated_monotone_front(points, k) -> None:
    archive = ParetoArchive(k)
    for episode, (d, m) in enumerate(points):
        config = {"a": LayerCodes(2, 4, 6, 8 + episode % 3, 10 + episode)}
        archive.add(config, Score(-(d + m), d, 0.0, d, m), episode)
    front = [(c.score.distill, c.score.multiplies_left) for c in archive.best()]
    assert 1 <= len(front) <= k
    assert all(m1 < m2 and d1 > d2 for (d1, m1), (d2, m2) in zip(front, front[1:])), front
    best_m = min(m for _, m in points)
    assert front[0][1] == best_m


def test_pareto_rows_are_monotone() -> None:
    rows = [{"val_drop": d, "multiplies_left": m} for d, m in [(3, 0.1), (2, 0.2), (2.5, 0.3), (1, 0.5), (1, 0.6)]]
    assert [(r["val_drop"], r["multiplies_left"]) for r in pareto_rows(rows)] == [(3, 0.1), (2, 0.2), (1, 0.5)]


def savings_job(tmp_path, sample, **selection):
    """A 12-episode random savings search on the sample, selected on val with the given margin settings."""
    teacher = api.load_teacher("lenet5", tmp_path / "none", device="cpu")
    cfg = api.SearchConfig(model="lenet5", output_dir=str(tmp_path), search="random", episodes=12, top_k=6,
                           objective="savings", max_acc_drop=30.0, no_test=True, workers=1,
                           space=api.SpaceOptions(calib_batches=2, dynamic_tmax=True), **selection)
    return api.run_search(cfg, teacher, sample).result


def test_savings_job_selects_fewest_multiplies_within_the_margin(tmp_path, sample) -> None:
    result = savings_job(tmp_path, sample, safety_margin=5.0)
    within = [c for c in result.validation.candidates if c["val_drop"] <= 25.0]
    assert result.selection.startswith("fewest-multiplies")
    assert result.validation.acc_drop <= 25.0
    chosen = min(within, key=lambda c: (c["multiplies_left"], c["val_drop"]))
    assert result.settings["hardware"]["totals"]["multiplies_left_vs_zero_skipping_int8"] == pytest.approx(
        chosen["multiplies_left"])
    front = result.settings["pareto_front"]
    assert front and all(a["multiplies_left"] < b["multiplies_left"] and a["val_drop"] > b["val_drop"]
                         for a, b in zip(front, front[1:]))
    written = json.loads((tmp_path / "tri_ppo_int_codes" / "result.json").read_text())
    assert written["objective"] == "savings" and written["pareto_front"] == front


def test_pareto_mode_prints_and_picks_a_point(tmp_path, capsys) -> None:
    from triseg.cli import main

    common = ["--model", "lenet5", "--output-dir", str(tmp_path), "--workers", "1"]
    assert main(["search", *common, "--search", "random", "--episodes", "10", "--top-k", "5", "--calib-batches", "1",
                 "--objective", "savings", "--dynamic-tmax", "--max-acc-drop", "50", "--no-test"]) == 0
    path = tmp_path / "tri_ppo_int_codes" / "result.json"
    front = json.loads(path.read_text())["pareto_front"]
    capsys.readouterr()
    assert main(["pareto", "--config-path", str(path), "--pick", "0"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") >= len(front) + 2 and "<- selected" in out
    picked = api.SearchResult.read(tmp_path / "tri_ppo_int_codes" / "result.pareto0.json")
    assert picked.test is None and picked.validation.acc_drop == pytest.approx(front[0]["val_drop"])
    assert {k: v.to_json() for k, v in picked.config.items()} == front[0]["layers"]
    assert main(["pareto", "--config-path", str(path), "--pick", str(len(front))]) == 2
    assert f"has {len(front)} points" in capsys.readouterr().err
    assert main(["search", *common, "--search", "exact-mse", "--episodes", "1", "--calib-batches", "1",
                 "--no-test", "--result-file", "plain.json"]) == 0
    capsys.readouterr()
    assert main(["pareto", "--config-path", str(tmp_path / "tri_ppo_int_codes" / "plain.json")]) == 2
    assert "has no Pareto front" in capsys.readouterr().err


@pytest.mark.parametrize("objective", ["savings", "reward"])
def test_selection_runs_the_teacher_on_val_once(tmp_path, sample, objective) -> None:
    """Selection and the val hardware report share one teacher pass over val (and savings reuses the
    chosen config's counts), with the same result as separate passes."""
    from triseg.hardware import cost

    teacher = api.load_teacher("lenet5", tmp_path / "none", device="cpu")
    cfg = api.SearchConfig(model="lenet5", output_dir=str(tmp_path), search="random", episodes=8, top_k=4,
                           objective=objective, max_acc_drop=30.0, no_test=True, workers=1,
                           space=api.SpaceOptions(calib_batches=1, dynamic_tmax=objective == "savings"))
    passes: list[bool] = []
    model = teacher.model
    hook = model.register_forward_pre_hook(  # a whole val batch (48 images) without any map: the teacher
        lambda m, args: passes.append(len(args[0]) == len(sample.val) and not getattr(model.recorder, "edits", None)))
    result = api.run_search(cfg, teacher, sample).result
    hook.remove()
    assert sum(passes) == 1
    expect = cost.hardware_report(model, result.config, sample.val, "val").to_json()
    assert result.settings["hardware"]["totals"] == expect["totals"]


def test_split_half_risk_falls_with_the_margin() -> None:
    from triseg.search.select import MARGINS, split_half_risk

    gen = torch.Generator().manual_seed(0)
    n = 4000
    teacher = torch.ones(n, dtype=torch.bool)
    safe = torch.ones(n, dtype=torch.bool)                     # drop 0, many multiplies left
    risky = torch.rand(n, generator=gen) >= 0.019              # drop about 1.9 points, few left
    rows = split_half_risk(teacher, torch.stack([safe, risky]), torch.tensor([0.9, 0.1]), 2.0, splits=400)
    assert [r["margin"] for r in rows] == list(MARGINS)
    assert rows[0]["over_limit"] > 0.2 and rows[-1]["over_limit"] < 0.05  # margin 0 picks the risky one often
    assert rows[0]["multiplies_left"] < rows[-1]["multiplies_left"]
    assert rows[0]["optimism"] > 0  # what is chosen on A looks better on A than on B


def test_margin_risk_chooses_the_margin_on_validation(tmp_path, sample) -> None:
    result = savings_job(tmp_path, sample, margin_risk=0.05)
    check = result.settings["margin_check"]
    margin = next((c["margin"] for c in check if c["over_limit"] <= 0.05), check[-1]["margin"])
    assert f"margin {margin:g};" in result.selection or result.selection.startswith("unconstrained")
    assert result.validation.acc_drop <= 30.0 - margin or result.selection.startswith("unconstrained")
    with pytest.raises(api.TrisegError, match="--margin-risk"):
        api.SearchConfig(margin_risk=0.05)
    with pytest.raises(api.TrisegError, match="--margin-risk"):
        api.SearchConfig(objective="savings", margin_risk=1.5)
