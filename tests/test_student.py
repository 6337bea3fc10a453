"""The student: accuracy and per-layer coverage counts."""

from __future__ import annotations

import torch

from triseg.approx.config import LayerCodes
from triseg.approx.student import evaluate_student
from triseg.data import normalize

NONTRIVIAL = {"conv1": LayerCodes(3, 6, 10, 16, 25), "conv2": LayerCodes(4, 8, 12, 20, 30),
              "fc1": LayerCodes(2, 5, 9, 15, 24), "fc2": LayerCodes(3, 7, 12, 20, 28)}


def test_student_coverage_counts(lenet_int8, sample):
    int8, _, _ = lenet_int8
    teacher = evaluate_student(int8, {}, sample.test)
    student = evaluate_student(int8, NONTRIVIAL, sample.test)
    assert teacher.coverage == {}
    assert student.accuracy == 100.0 * student.predictions.eq(sample.test.y).float().mean().item()
    with torch.no_grad():
        assert torch.equal(teacher.predictions, int8(normalize(sample.test.x)).argmax(1))
    assert sum(c["activations"] for c in student.coverage.values()) > 0
    for layer, cov in student.coverage.items():
        assert 0 < cov["zeroed_share"] <= cov["changed_share"] <= cov["mapped_share"] <= 1, layer
    assert student.predictions.shape == (len(sample.test),)
