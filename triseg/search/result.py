"""The result of a search job: the chosen config, how it was selected, what it was made from.

:class:`SearchResult` owns the result JSON (the original tool's shape: ``layers``, ``backend``,
``model``, ``selection``, ``metrics``, ``validation``, ``coverage``, then the settings) and
:class:`RunPaths` owns the names of every file a search writes, so no reader rebuilds them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from triseg.approx.config import TrisegConfig, config_path
from triseg.approx.schema import RESULT_SCHEMA, check
from triseg.approx.student import Config
from triseg.artifacts import write_json
from triseg.paths import read_json

RESULT_DIR = "tri_ppo_int_codes"


@dataclass(frozen=True)
class RunPaths:
    """Where one search run writes: result, history, checkpoint and TensorBoard folder."""

    output_dir: Path
    model: str
    search: str
    seed: int
    result_file: str

    @property
    def stem(self) -> str:
        return Path(self.result_file).stem

    @property
    def tag(self) -> str:
        """``model__search__seed__stem``: names the checkpoint and the TensorBoard run."""
        return f"{self.model}__{self.search}__{self.seed}__{self.stem}"

    @property
    def result(self) -> Path:
        return self.output_dir / RESULT_DIR / self.result_file

    @property
    def history(self) -> Path:
        return self.output_dir / RESULT_DIR / f"{self.stem}.history.json"

    @property
    def supervised_history(self) -> Path:
        """The gradient-based method's trajectory file."""
        return self.output_dir / RESULT_DIR / f"{self.stem}.supervised.json"

    @property
    def checkpoint(self) -> Path:
        return self.output_dir / "checkpoints" / f"{self.tag}.search.ckpt"

    @property
    def log_dir(self) -> Path:
        return self.output_dir / "runs" / f"{self.model}__{self.search}__{self.stem}__{self.seed}"

    @classmethod
    def of_result(cls, result: "SearchResult", result_file: Path, output_dir: Path) -> "RunPaths":
        """The paths of the run that wrote ``result_file`` under ``output_dir``."""
        return cls(output_dir, result.model, str(result.settings.get("search", "ppo")),
                   int(result.settings.get("seed", 0)), result_file.name)


@dataclass
class Validation:
    """The validation pass: teacher and chosen student accuracy, and every candidate's numbers."""

    acc_teacher: float
    acc_student: float
    acc_drop: float
    candidates: list[dict[str, Any]]


@dataclass
class TestMetrics:
    """The single test evaluation of the chosen config."""

    acc_teacher: float
    acc_student: float
    acc_drop: float
    top1_agreement: float


@dataclass
class SearchResult:
    """A chosen config with its validation selection, optional test metrics, coverage and settings."""

    model: str
    backend: str
    config: Config
    selection: str
    validation: Validation
    coverage: dict[str, Any]
    test: TestMetrics | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def val_drop(self) -> float:
        return self.validation.acc_drop

    @property
    def test_drop(self) -> float | None:
        return None if self.test is None else self.test.acc_drop

    def to_json(self) -> dict[str, Any]:
        """The result file's content."""
        out: dict[str, Any] = {**TrisegConfig(self.model, self.backend, self.config, {}).to_json(),
                               "selection": self.selection}
        if self.test is not None:
            out["metrics"] = {"acc_teacher": self.test.acc_teacher, "acc_student": self.test.acc_student,
                              "acc_drop": self.test.acc_drop}
        out["validation"] = asdict(self.validation)
        out["coverage"] = self.coverage
        if self.test is not None:
            out["test_top1_agreement_with_teacher"] = self.test.top1_agreement
        return {**out, **self.settings}

    @classmethod
    def from_json(cls, obj: Any, source: str = "result") -> "SearchResult":
        """Parse a result file's content; a one-line error names what is missing or of the wrong type."""
        check(obj, RESULT_SCHEMA, source, "search result")
        cfg = TrisegConfig.from_json(obj, source)
        extra = dict(cfg.extra)
        val = extra.pop("validation")
        validation = Validation(float(val["acc_teacher"]), float(val["acc_student"]), float(val["acc_drop"]),
                                list(val.get("candidates", [])))
        metrics = extra.pop("metrics", None)
        agreement = extra.pop("test_top1_agreement_with_teacher", None)
        test = None if metrics is None else TestMetrics(float(metrics["acc_teacher"]), float(metrics["acc_student"]),
                                                        float(metrics["acc_drop"]),
                                                        float("nan") if agreement is None else float(agreement))
        return cls(cfg.model, cfg.backend, cfg.layers, str(extra.pop("selection", "")), validation,
                   dict(extra.pop("coverage", {})), test, extra)

    def write(self, path: str | Path) -> Path:
        """Write the JSON atomically."""
        return write_json(self.to_json(), path)

    @classmethod
    def read(cls, path: str | Path) -> "SearchResult":
        """Read a result JSON (Windows spellings of the path accepted)."""
        p = config_path(str(path))
        return cls.from_json(read_json(p, "result"), str(p))

    def summary(self) -> str:
        """One line: validation (and test) drop, mapped share, multiplies left."""
        test = "" if self.test is None else (f"; test teacher {self.test.acc_teacher:.2f}% student "
                                             f"{self.test.acc_student:.2f}% drop {self.test.acc_drop:.2f} points")
        hw = self.settings.get("hardware")
        left = "" if not isinstance(hw, dict) else (
            f"; multiplies left ({hw['split']}) {hw['totals']['multiplies_left_vs_zero_skipping_int8']:.3f} of "
            "zero-skipping INT8")
        return (f"{self.model} {self.settings.get('search', '?')}: {self.selection}{test}; mapped share "
                f"({self.coverage.get('split', 'test')}) {self.coverage.get('mapped_share', float('nan')):.3f}{left}")
