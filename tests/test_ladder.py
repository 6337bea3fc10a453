"""The tmax ladder: its rungs, the move it takes, where it stops, resume, and the job around it."""

from __future__ import annotations

import pytest
import torch

from triseg import api
from triseg.approx.calibrate import LayerHistogram
from triseg.approx.config import MIN_TMAX, LayerCodes, validate
from triseg.errors import TrisegError
from triseg.search.base import Score
from triseg.search.exact_mse import exact_mse_codes
from triseg.search.ladder import LadderConfig, LadderStrategy, rungs
from triseg.search.space import SearchSpace

pytestmark = pytest.mark.usefixtures("one_thread")


def space() -> SearchSpace:
    """Three layers whose codes spread over 1..30, 1..80 and 1..127."""
    hists = {}
    for name, top in (("a", 30), ("b", 80), ("c", 127)):
        counts = torch.zeros(256, dtype=torch.int64)
        counts[0] = 500
        counts[1: top + 1] = torch.arange(top, 0, -1)  # falling like a ReLU output
        hists[name] = LayerHistogram(counts)
    return SearchSpace(list(hists), {k: 20 for k in hists}, {}, torch.zeros(3, 4), hists, 127, dynamic=True)


WEIGHT = {"a": 1.0, "b": 3.0, "c": 0.5}  # multiplies each layer holds
COST = {"a": 0.1, "b": 1.0, "c": 0.01}  # distillation loss a rung of each layer adds


def fake_score(config: dict[str, LayerCodes], episode: int) -> Score:
    """Multiplies fall as tmax rises (more so on heavy layers); loss rises with tmax (more so on costly ones)."""
    left = sum(WEIGHT[k] * (1 - c.tmax / 127) for k, c in config.items()) / sum(WEIGHT.values())
    distill = 0.01 + sum(COST[k] * c.tmax / 127 for k, c in config.items())
    return Score(-(left + distill), distill, 0.0, distill, left)


def drive(strategy: LadderStrategy, start: int, stop: int) -> list[tuple]:
    out = []
    for episode in range(start, stop):
        config = strategy.ask(episode)
        strategy.tell(episode, config, fake_score(config, episode))
        out.append(tuple((k, c.tmax) for k, c in sorted(config.items())))
    return out


def test_rungs_are_legal_exact_mse_maps_at_rising_tmax() -> None:
    s = space()
    for layer in s.layers:
        ladder = rungs(s, layer)
        tmaxes = [c.tmax for c in ladder]
        assert tmaxes == sorted(set(tmaxes)) and len(ladder) > 5
        assert MIN_TMAX <= tmaxes[0] and tmaxes[-1] <= 127
        for c in ladder:
            validate(layer, c, 127)
            assert c == exact_mse_codes(s.histograms[layer].counts, c.tmax)[0]
    assert rungs(s, "a")[-1].tmax == 30 and rungs(s, "c")[-1].tmax == 127  # the top rung holds every code


def full_greedy(s: SearchSpace, steps: int) -> list[str]:
    """The layers a greedy that re-scores every move at every step climbs, in order (by brute force)."""
    strategy = LadderStrategy(s)
    rung, order = {k: 0 for k in s.layers}, []
    for _ in range(steps):
        base = fake_score(strategy.config(rung), 0)
        moves = {}
        for k in s.layers:
            if rung[k] + 1 < len(strategy.ladders[k]):
                moved = fake_score(strategy.config({**rung, k: rung[k] + 1}), 0)
                saving, added = base.multiplies_left - moved.multiplies_left, moved.distill - base.distill
                moves[k] = (1, saving) if added <= 0 else (0, saving / added)
        if not moves:
            break
        best = max(moves, key=lambda k: (moves[k], -s.layers.index(k)))
        rung[best] += 1
        order.append(best)
    return order


def test_the_lazy_climb_takes_the_full_greedy_path_when_moves_do_not_interact() -> None:
    s = space()  # fake_score is a sum over layers: a move's worth does not depend on the other layers
    strategy = LadderStrategy(s, LadderConfig(stop_distill=1e6))
    order, rung, episodes = [], dict(strategy.rung), 0
    while not strategy.done:
        drive(strategy, episodes, episodes + 1)
        episodes += 1
        order += [k for k in s.layers if strategy.rung[k] != rung[k]]
        rung = dict(strategy.rung)
    assert order == full_greedy(s, len(order)) and len(order) == sum(len(v) - 1 for v in strategy.ladders.values())
    assert episodes < 1 + 3 * len(order)  # about two evaluations a step, not one per layer


def test_a_stale_best_move_is_re_scored_before_it_is_taken() -> None:
    strategy = LadderStrategy(space())
    strategy.incumbent, strategy.start_distill, strategy.moves, strategy.pending = (1.0, 0.5), 1.0, 3, []
    strategy.measured = {"a": (0.2, 0.1, 1.1, 0.3, 3), "b": (0.3, 0.1, 1.1, 0.2, 2), "c": (0.01, 0.1, 1.1, 0.49, 3)}
    strategy._decide()
    assert strategy.pending == ["b"] and strategy.rung == {"a": 0, "b": 0, "c": 0}  # b looks best but is stale
    strategy.tell(0, strategy.ask(0), Score(0.0, 0.0, 0.0, 1.5, 0.45))  # re-scored: worse than a now
    assert strategy.rung == {"a": 1, "b": 0, "c": 0} and strategy.incumbent == (1.1, 0.3)
    assert strategy.pending == ["a"]  # a's next rung is scored next


def test_a_move_that_adds_no_loss_is_taken_first() -> None:
    strategy = LadderStrategy(space())
    strategy.incumbent, strategy.start_distill, strategy.pending = (1.0, 0.5), 1.0, []
    strategy.measured = {"a": (0.4, 0.5, 1.5, 0.1, 0), "b": (0.05, -0.1, 0.9, 0.45, 0),
                         "c": (0.01, 0.01, 1.01, 0.49, 0)}
    strategy._decide()
    assert strategy.rung == {"a": 0, "b": 1, "c": 0} and strategy.incumbent == (0.9, 0.45)


def test_the_climb_reaches_the_top_or_stops_at_the_loss_limit() -> None:
    s = space()
    full = LadderStrategy(s, LadderConfig(stop_distill=1e6))
    drive(full, 0, 200)
    assert full.done and all(full.rung[k] == len(full.ladders[k]) - 1 for k in s.layers)
    assert drive(full, 200, 202)[0] == drive(full, 202, 203)[0]  # past the end it proposes the final config
    stopped = LadderStrategy(s, LadderConfig(stop_distill=3.0))
    drive(stopped, 0, 200)
    assert stopped.done and stopped.incumbent[0] > 3.0 * stopped.start_distill
    assert sum(stopped.rung.values()) < sum(full.rung.values())


def test_resume_mid_round_continues_the_same_climb() -> None:
    s = space()
    full = drive(LadderStrategy(s, LadderConfig(stop_distill=1e6)), 0, 40)
    first = LadderStrategy(s, LadderConfig(stop_distill=1e6))
    head = drive(first, 0, 14)
    second = LadderStrategy(s, LadderConfig(stop_distill=1e6))
    second.load_state_dict(first.state_dict())
    assert head + drive(second, 14, 40) == full


def test_the_ladder_needs_the_savings_objective_and_searched_tmax() -> None:
    with pytest.raises(TrisegError, match="--objective savings --dynamic-tmax"):
        api.SearchConfig(search="ladder")
    with pytest.raises(TrisegError, match="--objective savings --dynamic-tmax"):
        api.SearchConfig(search="ladder", objective="savings")
    with pytest.raises(TrisegError, match="--stop-distill"):
        api.SearchConfig(search="ppo", ladder=LadderConfig(stop_distill=5.0))
    api.SearchConfig(search="ladder", objective="savings", space=api.SpaceOptions(dynamic_tmax=True))


def test_ladder_job_climbs_on_one_fixed_slice_and_selects_on_val(tmp_path, sample) -> None:
    teacher = api.load_teacher("lenet5", tmp_path / "none", device="cpu")
    cfg = api.SearchConfig(model="lenet5", output_dir=str(tmp_path), search="ladder", episodes=30, top_k=10,
                           objective="savings", episode_images=64, max_acc_drop=30.0, safety_margin=5.0,
                           no_test=True, workers=1, space=api.SpaceOptions(calib_batches=2, dynamic_tmax=True))
    evaluator = api.make_evaluator(teacher, sample, cfg)
    assert evaluator.batches.num_batches == 1 and evaluator.batches.batch_size == 64
    result = api.run_search(cfg, teacher, sample).result
    assert result.selection.startswith("fewest-multiplies")
    lefts = [c["multiplies_left"] for c in result.validation.candidates]
    assert min(lefts) < max(lefts)  # the climb moved the savings
    with pytest.raises(TrisegError, match="fewer than --episode-images"):
        api.make_evaluator(teacher, sample, api.SearchConfig(model="lenet5", episode_images=len(sample.train) + 1))


def test_the_search_ends_with_the_climb_and_a_resume_ends_there_too(tmp_path) -> None:
    from triseg.search.run import SearchSettings, run_search

    class FakeEvaluator:
        evaluations = 0

        def score(self, config, episode):
            self.evaluations += 1
            return fake_score(config, episode)

    settings = SearchSettings(episodes=500, top_k=5, checkpoint_every=7, objective="savings")
    strategy = LadderStrategy(space(), LadderConfig(stop_distill=1e6))
    outcome = run_search(strategy, FakeEvaluator(), settings, tmp_path / "ck.pt", tmp_path / "runs")
    assert strategy.done and outcome.finished and len(outcome.history) < 500
    again = LadderStrategy(space(), LadderConfig(stop_distill=1e6))
    resumed = run_search(again, FakeEvaluator(), settings, tmp_path / "ck.pt", tmp_path / "runs", resume=True)
    assert len(resumed.history) == len(outcome.history) and again.rung == strategy.rung
