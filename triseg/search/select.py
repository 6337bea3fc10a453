"""Selection on the validation split, and the one explicit evaluation on the test split.

The two are separate steps: a search job selects, and only when asked (``no_test=False``, or the
``final_test`` mode later) evaluates the chosen config on test.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from triseg.approx.student import Config, StudentEval, evaluate_student
from triseg.data import Split
from triseg.hardware.cost import CostCounts, HardwareReport, count
from triseg.hardware.energy import DEFAULT_TABLE
from triseg.search.base import Candidate, TopK
from triseg.search.result import TestMetrics, Validation


@dataclass
class Selection:
    """The chosen config, why it was chosen, and the validation pass (``counts``: the chosen config's
    cost-model counts on val when the selection made them)."""

    config: Config
    reason: str
    validation: Validation
    counts: CostCounts | None = None
    margin_check: list[dict[str, float]] | None = None


MARGINS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5)  # the safety margins a risk-chosen margin picks from


def split_half_risk(teacher_correct: torch.Tensor, correct: torch.Tensor, lefts: torch.Tensor, max_acc_drop: float,
                    splits: int = 1000, seed: int = 0) -> list[dict[str, float]]:
    """How optimistic the savings selection is, measured on validation alone.

    ``teacher_correct`` (images) and ``correct`` (candidates x images) say which validation images are
    classified right; ``lefts`` are the candidates' multiplies left. For ``splits`` random halves A/B it
    selects on A with each margin of ``MARGINS`` (fewest multiplies left with drop <= limit - margin) and
    reads the chosen candidate's drop on B. Per margin: the mean multiplies left chosen, the mean
    optimism (drop on B - drop on A) and the share of splits whose drop on B exceeds the limit (where no
    candidate is within the budget on A, the most accurate one is chosen, as the selection does). Half
    the images make each drop noisier than the whole split's, so the shares are pessimistic.
    """
    loss = teacher_correct.float() - correct.float()  # candidates x images
    gen = torch.Generator().manual_seed(seed)
    n = loss.shape[1]
    drops_a, drops_b = [], []
    for _ in range(splits):
        perm = torch.randperm(n, generator=gen)
        drops_a.append(100 * loss[:, perm[: n // 2]].mean(1))
        drops_b.append(100 * loss[:, perm[n // 2:]].mean(1))
    da, db = torch.stack(drops_a), torch.stack(drops_b)  # splits x candidates
    rows = []
    for m in MARGINS:
        ok = da <= max_acc_drop - m
        fewest = torch.where(ok, lefts.double().expand_as(da), torch.full_like(da, float("inf"), dtype=torch.float64))
        pick = torch.where(ok.any(1), fewest.argmin(1), da.argmin(1))  # none within: the most accurate, as selected
        every = torch.arange(splits)
        a, b = da[every, pick], db[every, pick]
        rows.append({"margin": m, "multiplies_left": lefts[pick].double().mean().item(),
                     "optimism": (b - a).mean().item(), "over_limit": (b > max_acc_drop).double().mean().item()})
    return rows


def teacher_on_validation(model: nn.Module, val: Split, batch_size: int = 256) -> CostCounts:
    """The teacher's one pass over val: its predictions (accuracy) and cost-model counts, shared by the
    selection and the hardware report."""
    return count(model, {}, val, batch_size)


def select_on_validation(model: nn.Module, val: Split, top: TopK, max_acc_drop: float,
                         batch_size: int = 256, teacher: CostCounts | None = None) -> Selection:
    """Evaluate every top-k config on val; pick the most accurate within the drop limit (else the most accurate).

    ``teacher``: the teacher's pass over val (:func:`teacher_on_validation`) when the caller shares it,
    else a plain pass here.
    """
    teacher_val = (teacher.accuracy(val.y) if teacher is not None
                   else evaluate_student(model, {}, val, batch_size, coverage=False).accuracy)
    rows = []
    for cand in tqdm(top.best(), desc="validate top-k", leave=False, mininterval=2.0):
        ev = evaluate_student(model, cand.config, val, batch_size, coverage=False)
        rows.append({"candidate": cand, "val_acc": ev.accuracy, "val_drop": teacher_val - ev.accuracy})
    if not rows:
        raise RuntimeError("the search produced no candidate configs")
    within = [r for r in rows if r["val_drop"] <= max_acc_drop]
    if within:
        chosen = max(within, key=lambda r: (r["val_acc"], r["candidate"].reward))
        reason = f"constrained-best (val drop={chosen['val_drop']:.2f}% <= {max_acc_drop}%)"
    else:
        chosen = max(rows, key=lambda r: (r["val_acc"], r["candidate"].reward))
        reason = f"unconstrained-best (val drop={chosen['val_drop']:.2f}% > {max_acc_drop}%)"
        warnings.warn(f"no top-k config stays within --max-acc-drop {max_acc_drop} on val; "
                      f"reporting the most accurate one", stacklevel=1)
    config: Config = chosen["candidate"].config
    validation = Validation(teacher_val, chosen["val_acc"], chosen["val_drop"],
                            [{"reward": r["candidate"].reward, "episode": r["candidate"].episode,
                              "val_acc": r["val_acc"], "val_drop": r["val_drop"]} for r in rows])
    return Selection(config, reason, validation)


RACE_FIRST = 500  # images of the first slice of a race (then doubled up to the whole split)
RACE_Z = 4.0  # a candidate leaves the race when a one-sided normal bound at this many standard errors says so


def select_savings(model: nn.Module, val: Split, candidates: list[Candidate], max_acc_drop: float,
                   margin: float, batch_size: int = 256, teacher: CostCounts | None = None,
                   risk: float | None = None, race: bool = False) -> tuple[Selection, list[dict[str, Any]]]:
    """Among the candidates, the fewest multiplies left (counted on val) with val drop <= limit - margin.

    With ``risk``, the margin is chosen on validation instead: the smallest of ``MARGINS`` whose
    :func:`split_half_risk` share over the limit is at most ``risk`` (else the largest); the table goes
    into the selection. With ``race`` (and no ``risk``, which needs every candidate on the whole split),
    the candidates race on growing slices of val (:func:`race_savings`); the pick is scored on the whole
    split. Returns the selection (with the chosen config's counts) and the Pareto front (val drop vs
    multiplies left) of the candidates validated on the whole split. ``teacher`` as in
    :func:`select_on_validation`.
    """
    teacher = teacher or teacher_on_validation(model, val, batch_size)
    teacher_acc = teacher.accuracy(val.y)
    teacher_mult = max(1, teacher.total("macs") - teacher.total("skipped"))
    if race and risk is None:
        evaluated = race_savings(model, val, candidates, max_acc_drop - margin, teacher, batch_size)
    else:
        evaluated = []
        for cand in tqdm(candidates, desc="validate front", leave=False, mininterval=2.0):
            counts = count(model, cand.config, val, batch_size)
            evaluated.append((cand, counts, counts.accuracy(val.y), teacher_acc - counts.accuracy(val.y)))
    rows = [{"candidate": cand, "val_acc": acc, "val_drop": drop, "counts": counts, "val_images": counts.images,
             "multiplies_left": counts.total("multiplied") / (teacher_mult * counts.images / len(val))}
            for cand, counts, acc, drop in evaluated]
    if not rows:
        raise RuntimeError("the search produced no candidate configs")
    whole = [r for r in rows if r["val_images"] == len(val)]
    check = None
    if risk is not None:
        correct = torch.stack([torch.cat(r["counts"].predictions).eq(val.y) for r in rows])
        check = split_half_risk(torch.cat(teacher.predictions).eq(val.y), correct,
                                torch.tensor([r["multiplies_left"] for r in rows]), max_acc_drop)
        margin = next((c["margin"] for c in check if c["over_limit"] <= risk), MARGINS[-1])
    budget = max_acc_drop - margin
    within = [r for r in whole if r["val_drop"] <= budget]
    if within:
        chosen = min(within, key=lambda r: (r["multiplies_left"], r["val_drop"]))
        reason = (f"fewest-multiplies (val drop={chosen['val_drop']:.2f}% <= {budget:g}% = limit {max_acc_drop:g} - "
                  f"margin {margin:g}; multiplies left {chosen['multiplies_left']:.3f})")
    else:
        chosen = max(whole, key=lambda r: (r["val_acc"], -r["multiplies_left"]))
        reason = f"unconstrained-best (val drop={chosen['val_drop']:.2f}% > {budget:g}%)"
        warnings.warn(f"no candidate stays within --max-acc-drop {max_acc_drop} - --safety-margin {margin} on val; "
                      f"reporting the most accurate one", stacklevel=1)
    raced = len(whole) < len(rows)
    validation = Validation(teacher_acc, chosen["val_acc"], chosen["val_drop"],
                            [{"reward": r["candidate"].reward, "episode": r["candidate"].episode,
                              "val_acc": r["val_acc"], "val_drop": r["val_drop"],
                              "multiplies_left": r["multiplies_left"],
                              **({"val_images": r["val_images"]} if raced else {})} for r in rows])
    front = [{"val_drop": r["val_drop"], "val_acc": r["val_acc"], "multiplies_left": r["multiplies_left"],
              "episode": r["candidate"].episode, "layers": {k: v.to_json() for k, v in r["candidate"].config.items()}}
             for r in pareto_rows(whole)]
    return Selection(chosen["candidate"].config, reason, validation, chosen["counts"], check), front


def race_savings(model: nn.Module, val: Split, candidates: list[Candidate], budget: float, teacher: CostCounts,
                 batch_size: int = 256, first: int | None = None, z: float = RACE_Z,
                 seed: int = 0) -> list[tuple[Candidate, CostCounts, float, float]]:
    """The savings selection's candidates raced on growing slices of val, in one seeded random order of val:
    each with its counts, accuracy and drop on the images it saw (on the whole split: as one pass gives them).

    Every candidate sees the first slice (``first`` images, default :data:`RACE_FIRST`). Then, fewest
    multiplies on that slice first, each is counted on doubling slices until it is on the whole split or
    leaves the race: when its drop on the slice exceeds ``budget`` by ``z`` standard errors (normal bound
    with the finite-population correction), or when, paired image by image, it does more multiplies than
    the best candidate so far (fewest multiplies among those within ``budget`` on the whole split) by
    ``z`` standard errors. The fewest-multiplies pick within the budget is then the exhaustive pass's
    unless a bound errs; when no candidate is within the budget on the whole split, every one is counted
    on the whole split, so the most accurate one is the exhaustive pass's too.
    """
    n, first = len(val), RACE_FIRST if first is None else first
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    shuffled = Split(val.x[order], val.y[order])
    teacher_right = torch.cat(teacher.predictions).eq(val.y)[order].double()
    ends = [min(n, first << i) for i in range(max(1, (n - 1) // max(1, first)).bit_length() + 1)]
    counts: dict[int, CostCounts] = {}

    def grow(i: int, end: int) -> None:
        seen = counts[i].images if i in counts else 0
        counts[i] = count(model, candidates[i].config, Split(shuffled.x[seen:end], shuffled.y[seen:end]),
                          batch_size, per_image=True, counts=counts.get(i))

    def above(diff: torch.Tensor, limit: float) -> bool:
        """Whether the mean of ``diff`` over the whole split exceeds ``limit`` by ``z`` standard errors."""
        m = len(diff)
        se = diff.std() / m ** 0.5 * ((n - m) / max(1, n - 1)) ** 0.5 if m > 1 else torch.tensor(float("inf"))
        return bool(diff.mean() - z * se > limit)

    def drop(i: int) -> torch.Tensor:
        c = counts[i]
        return 100 * (teacher_right[:c.images] - torch.cat(c.predictions).eq(shuffled.y[:c.images]).double())

    def multiplies(i: int) -> torch.Tensor:
        return torch.cat(counts[i].image_multiplies)

    def whole_drop(i: int) -> float:  # on the whole split: the drop exactly as one pass gives it
        return teacher.accuracy(val.y) - counts[i].accuracy(shuffled.y)

    for i in tqdm(range(len(candidates)), desc="race front", leave=False, mininterval=2.0):
        grow(i, ends[0])
    best: int | None = None
    raced_out = []
    for i in sorted(counts, key=lambda i: counts[i].total("multiplied")):
        while (seen := counts[i].images) < n:
            if best is not None and above(multiplies(i) - multiplies(best)[:seen], 0.0):
                break
            if above(drop(i), budget):
                raced_out.append(i)
                break
            grow(i, next(e for e in ends if e > seen))
        if counts[i].images == n and whole_drop(i) <= budget and (
                best is None or (counts[i].total("multiplied"), whole_drop(i)) <
                (counts[best].total("multiplied"), whole_drop(best))):
            best = i
    if best is None:  # none within the budget: the most accurate of all is picked, so all are needed
        for i in raced_out:
            grow(i, n)
    inverse = torch.argsort(order)
    out = []
    for i, cand in enumerate(candidates):
        c = counts[i]
        seen = shuffled.y[:c.images]
        acc, acc_teacher = c.accuracy(seen), 100.0 * teacher_right[:c.images].float().mean().item()
        if c.images == n:  # in val's order, accuracy and drop as one pass gives them
            c.predictions = [torch.cat(c.predictions)[inverse]]
            acc, acc_teacher = c.accuracy(val.y), teacher.accuracy(val.y)
        c.image_multiplies = []
        out.append((cand, c, acc, acc_teacher - acc))
    return out


def pareto_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that no other row beats on both val drop and multiplies left, fewest multiplies first."""
    ordered = sorted(rows, key=lambda r: (r["multiplies_left"], r["val_drop"]))
    front, best_drop = [], float("inf")
    for r in ordered:
        if r["val_drop"] < best_drop:
            front.append(r)
            best_drop = r["val_drop"]
    return front


def coverage_on(model: nn.Module, config: Config, split: Split, batch_size: int, name: str) -> dict:
    """Per-layer coverage of ``config`` on ``split`` (named ``name`` in the result)."""
    return coverage_section(evaluate_student(model, config, split, batch_size), name)


def coverage_section(ev: StudentEval, name: str) -> dict:
    """The result's coverage section of an evaluation with coverage (of split ``name``)."""
    return {"split": name, "mapped_share": ev.mapped_share, "layers": ev.coverage}


def counted_eval(counts: CostCounts, split: Split) -> StudentEval:
    """The evaluation a pass counted with ``coverage`` (:func:`~triseg.hardware.cost.count`) also gives."""
    return StudentEval(counts.accuracy(split.y), torch.cat(counts.predictions), counts.coverage)


def evaluate_on_test(model: nn.Module, config: Config, test: Split, batch_size: int = 256,
                     energy_table: dict[str, Any] | None = None) -> tuple[TestMetrics, dict, HardwareReport]:
    """The single test evaluation: teacher and student accuracy, top-1 agreement, test coverage and the
    hardware report, from one pass of the teacher and one of the student over the test split."""
    teacher_counts = count(model, {}, test, batch_size)
    student_counts = count(model, config, test, batch_size, coverage=True)
    teacher, student = counted_eval(teacher_counts, test), counted_eval(student_counts, test)
    metrics = TestMetrics(round(teacher.accuracy, 4), round(student.accuracy, 4),
                          round(teacher.accuracy - student.accuracy, 4),
                          100.0 * student.predictions.eq(teacher.predictions).float().mean().item())
    report = HardwareReport("test", student_counts.images, student_counts, teacher_counts,
                            energy_table or DEFAULT_TABLE)
    return metrics, coverage_section(student, "test"), report
