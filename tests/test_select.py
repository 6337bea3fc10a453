"""Selection and the test evaluation without waste: every model runs once per split where it can, with the
numbers of separate passes."""

from __future__ import annotations

import pytest

from triseg import api
from triseg.approx.student import evaluate_student
from triseg.hardware.cost import hardware_report
from triseg.search.job import evaluate_test
from triseg.search.result import TestMetrics as Metrics
from triseg.search.select import coverage_on

pytestmark = pytest.mark.usefixtures("one_thread")


def count_passes(model, images: int) -> tuple[list[str], object]:
    """A forward hook that notes every pass over a batch of ``images`` images: 'teacher' (no map installed)
    or 'student'."""
    passes: list[str] = []

    def hook(module, args) -> None:
        if len(args[0]) == images:
            passes.append("student" if getattr(module.recorder, "edits", None) else "teacher")

    return passes, model.register_forward_pre_hook(hook)


def small_search(tmp_path, sample, objective: str = "reward"):
    teacher = api.load_teacher("lenet5", tmp_path / "none", device="cpu")
    cfg = api.SearchConfig(model="lenet5", output_dir=str(tmp_path), search="random", episodes=8, top_k=4,
                           objective=objective, max_acc_drop=30.0, no_test=True, workers=1,
                           space=api.SpaceOptions(calib_batches=1, dynamic_tmax=objective == "savings"))
    return teacher, cfg


def test_test_evaluation_runs_teacher_and_student_once(tmp_path, sample) -> None:
    """evaluate_test: one pass of the teacher and one of the student over test (it was two each), and the
    same metrics, coverage and hardware report as the separate passes gave."""
    teacher, cfg = small_search(tmp_path, sample)
    result = api.run_search(cfg, teacher, sample).result
    model, test, batch = teacher.model, sample.test, 40  # 120 test images: 3 batches a pass
    passes, hook = count_passes(model, batch)
    evaluate_test(result, teacher, sample, batch_size=batch)
    hook.remove()
    assert passes.count("teacher") == 3 and passes.count("student") == 3
    t = evaluate_student(model, {}, test, batch)
    s = evaluate_student(model, result.config, test, batch)
    assert result.test == Metrics(round(t.accuracy, 4), round(s.accuracy, 4), round(t.accuracy - s.accuracy, 4),
                                      100.0 * s.predictions.eq(t.predictions).float().mean().item())
    assert result.coverage == {"split": "test", "mapped_share": s.mapped_share, "layers": s.coverage}
    assert result.settings["hardware"] == hardware_report(model, result.config, test, "test", None, batch).to_json()


def test_no_test_selection_runs_the_chosen_config_once_more(tmp_path, sample) -> None:
    """Top-k selection with --no-test: the teacher once, each candidate once, the chosen config once more for its
    coverage and counts together (it was twice more), with the numbers of separate passes."""
    teacher, cfg = small_search(tmp_path, sample)
    passes, hook = count_passes(teacher.model, len(sample.val))
    result = api.run_search(cfg, teacher, sample).result
    hook.remove()
    assert passes.count("teacher") == 1
    assert passes.count("student") == len(result.validation.candidates) + 1
    assert result.coverage == coverage_on(teacher.model, result.config, sample.val, 256, "val")
    assert result.settings["hardware"] == hardware_report(teacher.model, result.config, sample.val, "val").to_json()


@pytest.fixture(scope="module")
def savings_candidates(tmp_path_factory, sample):
    """The LeNet-5 teacher and 16 random configs with searched tmax (multiplies left 0.61-0.73 of the teacher's,
    drops of 19-48 points on the sample's 48 validation images)."""
    from triseg.search.base import Candidate, Score
    from triseg.search.random_search import RandomStrategy
    from triseg.search.space import build_space

    teacher = api.load_teacher("lenet5", tmp_path_factory.mktemp("none"), device="cpu")
    space = build_space(teacher.model, sample.train, 1, 16, teacher.top_code, seed=0, dynamic=True)
    strategy = RandomStrategy(space, seed=0)
    return teacher, [Candidate(0.0, e, strategy.ask(e), Score(0.0, 0.0, 0.0)) for e in range(16)]


@pytest.mark.parametrize("limit, margin", [(40.0, 5.0), (30.0, 10.0), (0.0, 0.0)])
def test_race_picks_what_every_candidate_on_the_whole_split_picks(savings_candidates, sample, monkeypatch,
                                                                   limit, margin) -> None:
    """On slices of 8, 16, 32 and 48 images some candidates leave the race, and the pick, its drop and its
    counts are those of the exhaustive pass over the whole split (also when none is within the budget)."""
    from triseg.hardware.cost import as_dict, count
    from triseg.search import select

    teacher, candidates = savings_candidates
    model, val = teacher.model, sample.val
    monkeypatch.setattr(select, "RACE_FIRST", 8)
    teacher_val = select.teacher_on_validation(model, val)
    full, full_front = select.select_savings(model, val, candidates, limit, margin, teacher=teacher_val)
    raced, front = select.select_savings(model, val, candidates, limit, margin, teacher=teacher_val, race=True)
    assert raced.config == full.config and raced.reason == full.reason
    assert raced.validation.acc_drop == full.validation.acc_drop
    assert as_dict(raced.counts) == as_dict(full.counts) and raced.counts.images == len(val)
    alone = count(model, raced.config, val)
    assert raced.validation.acc_drop == teacher_val.accuracy(val.y) - alone.accuracy(val.y)
    rows = raced.validation.candidates
    whole = [r for r in rows if r.get("val_images", len(val)) == len(val)]
    if limit > 0:
        assert len(whole) < len(candidates), "the race should leave some candidates on a slice"
    else:  # none within the budget: every candidate goes to the whole split, the most accurate is picked
        assert len(whole) == len(candidates) and raced.reason.startswith("unconstrained")
    by_episode = {r["episode"]: r for r in full.validation.candidates}
    for r in whole:
        assert r["val_drop"] == by_episode[r["episode"]]["val_drop"]
        assert r["multiplies_left"] == by_episode[r["episode"]]["multiplies_left"]
    assert all(p in full_front for p in front)


def test_race_is_a_savings_option() -> None:
    assert not api.SearchConfig(objective="savings").race and api.SearchConfig(objective="savings", race=True).race
    with pytest.raises(api.TrisegError, match="--race applies only with --objective savings"):
        api.SearchConfig(race=True)
