"""An exported model against the torch INT8 student, image by image: onnxruntime (graph optimisations off
and on) for ``onnx`` files, qonnx's ``execute_onnx`` for ``qonnx`` files.

Per run: top-1 agreement, bit-identical logits, the largest and mean logit difference, the accuracy
each side gets, and (when the file has the debug outputs) the share of equal uint8 values at every tap,
before the map (``codes_in.<layer>``: the kernels' own rounding) and after it (``codes.<layer>``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch

from triseg.approx.config import TrisegConfig
from triseg.approx.lut import LutEdit
from triseg.data import Split, batches
from triseg.errors import TrisegError, first_line
from triseg.export.deps import require
from triseg.export.onnx_graph import INPUT, OUTPUT, read_metadata, tap_input_output, tap_output
from triseg.recorder import Recorder, attach
from triseg.teacher import Teacher

OPT_LEVELS = ("off", "on")
Runner = Callable[[np.ndarray], dict[str, np.ndarray]]


def session_options(threads: int, optimize: bool, optimized_path: str | None = None) -> Any:
    """onnxruntime session options: ``threads`` intra-op threads (0: onnxruntime's choice), optimisations
    all or none."""
    ort = require("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.log_severity_level = 3
    if optimized_path is not None:
        so.optimized_model_filepath = optimized_path
    return so


def ort_session(model: str | bytes, threads: int, optimize: bool, optimized_path: str | None = None) -> Any:
    """An onnxruntime CPU session of a model file or serialized model."""
    ort = require("onnxruntime")
    return ort.InferenceSession(model, session_options(threads, optimize, optimized_path),
                                providers=["CPUExecutionProvider"])


def ort_runner(session: Any) -> Runner:
    """Every output of a session, by name, for one float32 batch."""
    names = [o.name for o in session.get_outputs()]
    return lambda x: dict(zip(names, session.run(None, {INPUT: x})))


@contextlib.contextmanager
def _qonnx_threads(threads: int) -> Iterator[None]:
    """qonnx runs each standard node in its own onnxruntime session without a thread setting: give it ours."""
    onnx_exec = require("qonnx.core.onnx_exec")
    ort = onnx_exec.rt

    class _Sessions:
        @staticmethod
        def InferenceSession(model: bytes, *_: Any, **__: Any) -> Any:
            return ort.InferenceSession(model, session_options(threads, optimize=False),
                                        providers=["CPUExecutionProvider"])

    onnx_exec.rt = _Sessions
    try:
        yield
    finally:
        onnx_exec.rt = ort


class QonnxRunner:
    """A qonnx model executed with ``execute_onnx``, re-shaped for each batch size it meets."""

    def __init__(self, model: Any, threads: int) -> None:
        self.model, self.threads = model, threads
        self._by_batch: dict[int, Any] = {}

    def __call__(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from triseg.export.qonnx_graph import with_batch

        n = len(x)
        if n not in self._by_batch:
            self._by_batch[n] = with_batch(self.model, n)
        execute = require("qonnx.core.onnx_exec").execute_onnx
        with _qonnx_threads(self.threads):
            return execute(self._by_batch[n], {INPUT: x})


class _TapRecorder(Recorder):
    """Applies the maps and keeps every tap's uint8 values, before the map (mapped layers) and after it."""

    def __init__(self, teacher: Teacher, config: TrisegConfig | None) -> None:
        model = teacher.model
        layers = {} if config is None else config.layers
        super().__init__({model.tap_name(k): LutEdit(v) for k, v in layers.items()}, keep=set())
        self.layer_of = {model.tap_name(layer): layer for layer in model.layers()}
        self.values: dict[str, np.ndarray] = {}

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        layer = self.layer_of[name]
        if name in self.edits:
            self.values[tap_input_output(layer)] = x.int_repr().numpy()
        x = self.maybe_edit(name, x)
        self.values[tap_output(layer)] = x.int_repr().numpy()
        return x


@dataclass
class Agreement:
    """Counts of one runtime against the torch student over the images seen so far."""

    images: int = 0
    same_top1: int = 0
    identical_logits: int = 0
    correct_runtime: int = 0
    correct_torch: int = 0
    max_logit_diff: float = 0.0
    sum_logit_diff: float = 0.0
    taps: dict[str, list[int]] = field(default_factory=dict)

    def update(self, ref: np.ndarray, ref_taps: dict[str, np.ndarray], out: dict[str, np.ndarray],
               labels: np.ndarray) -> None:
        """Add one batch: torch logits and tap values against the runtime's outputs."""
        logits = out[OUTPUT]
        diff = np.abs(logits.astype(np.float64) - ref.astype(np.float64)).max(axis=1)
        self.images += len(ref)
        self.same_top1 += int((logits.argmax(1) == ref.argmax(1)).sum())
        self.identical_logits += int((diff == 0).sum())
        self.correct_runtime += int((logits.argmax(1) == labels).sum())
        self.correct_torch += int((ref.argmax(1) == labels).sum())
        self.max_logit_diff = max(self.max_logit_diff, float(diff.max()))
        self.sum_logit_diff += float(diff.sum())
        for name, values in ref_taps.items():
            if name in out:
                counts = self.taps.setdefault(name, [0, 0])
                counts[0] += int((out[name] == values).sum())
                counts[1] += values.size

    def as_dict(self) -> dict[str, Any]:
        """Percentages and differences, for printing and JSON."""
        n = max(1, self.images)
        return {"images": self.images, "top1_agreement": 100 * self.same_top1 / n,
                "identical_logits": 100 * self.identical_logits / n,
                "accuracy_runtime": 100 * self.correct_runtime / n, "accuracy_torch": 100 * self.correct_torch / n,
                "max_logit_diff": self.max_logit_diff, "mean_max_logit_diff": self.sum_logit_diff / n,
                "equal_codes": {k: 100 * e / max(1, t) for k, (e, t) in self.taps.items()},
                "different_codes": {k: t - e for k, (e, t) in self.taps.items()}}


def load_export(path: str | Path) -> tuple[Any, dict[str, str]]:
    """The ONNX model in ``path`` and its triseg metadata; a one-line error for anything else."""
    onnx = require("onnx")
    p = Path(path)
    if not p.is_file():
        raise TrisegError(f"--onnx {p} not found")
    try:
        model = onnx.load(str(p))
    except Exception as exc:
        raise TrisegError(f"--onnx {p} is not an ONNX model ({type(exc).__name__})") from None
    meta = read_metadata(model)
    if "model" not in meta:
        raise TrisegError(f"--onnx {p} was not written by triseg export (no triseg metadata)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise TrisegError(f"--onnx {p} is not a valid ONNX model ({first_line(exc)})") from None
    inputs, outputs = [i.name for i in model.graph.input], [o.name for o in model.graph.output]
    if inputs != [INPUT] or OUTPUT not in outputs:
        raise TrisegError(f"--onnx {p} takes {inputs} and gives {outputs}; a triseg export takes [{INPUT!r}] and "
                          f"gives {OUTPUT!r}")
    return model, meta


def _meta_object(meta: dict[str, str], key: str, path: str | Path) -> dict[str, Any]:
    """A JSON object held in the export's ``triseg.<key>`` metadata (empty when absent)."""
    try:
        obj = json.loads(meta.get(key, "{}"))
    except (json.JSONDecodeError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        raise TrisegError(f"--onnx {path}: its triseg.{key} metadata is not a JSON object (re-export the model)")
    return obj


def check_export(meta: dict[str, str], path: str | Path, teacher: Teacher, config: TrisegConfig | None) -> None:
    """The file must hold this teacher with exactly this config's maps."""
    if meta["model"] != teacher.name:
        raise TrisegError(f"{path} is an export of {meta['model']}, not {teacher.name}")
    sha = _meta_object(meta, "teacher", path).get("sha256")
    if sha != teacher.sha256:
        raise TrisegError(f"{path} was exported from another {teacher.name} teacher (sha256 {sha}), not {teacher.path}")
    layers = _meta_object(meta, "layers", path)
    wanted = {} if config is None else {k: v.to_json() for k, v in config.layers.items()}
    if layers != wanted:
        source = meta.get("config_file") or "no config"
        raise TrisegError(f"{path} holds the maps of {source} ({', '.join(layers) or 'none'}), not those of "
                          f"{'--config-path' if config else 'the teacher (pass its --config-path)'}")


def op_counts(model: Any) -> dict[str, int]:
    """How many nodes of each op type a model has (domain-qualified for custom domains)."""
    return dict(sorted(Counter(f"{n.domain}.{n.op_type}" if n.domain else n.op_type
                               for n in model.graph.node).items()))


def optimised_ops(model: str | Path | bytes, threads: int) -> dict[str, int]:
    """The op types of the graph onnxruntime runs with every optimisation on (a file or a serialized model)."""
    onnx = require("onnx")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "optimised.onnx")
        ort_session(model if isinstance(model, bytes) else str(model), threads, optimize=True, optimized_path=out)
        return op_counts(onnx.load(out))


@torch.no_grad()
def compare(references: dict[str, Teacher], config: TrisegConfig | None, runners: dict[str, Runner], split: Split,
            batch_size: int) -> dict[str, dict[str, Agreement]]:
    """Every runner against every torch reference on ``split``: ``stats[runner][reference]``.

    Each batch runs once in each runtime and once in each reference, so runners are compared on
    the same images in one pass.
    """
    stats = {r: {ref: Agreement() for ref in references} for r in runners}
    recorders = {name: _TapRecorder(t, config) for name, t in references.items()}
    previous = {name: t.model.recorder for name, t in references.items()}
    for name, t in references.items():
        attach(t.model, recorders[name])
    try:
        for x, y in batches(split, batch_size):
            refs = {}
            for name, t in references.items():
                recorders[name].values = {}
                refs[name] = t.model(x).numpy()
            for r, run in runners.items():
                out = run(x.numpy())
                for name in references:
                    stats[r][name].update(refs[name], recorders[name].values, out, y.numpy())
    finally:
        for name, t in references.items():
            attach(t.model, previous[name])
    return stats


def runners_for(path: str | Path, model: Any, meta: dict[str, str], threads: int,
                opt_levels: tuple[str, ...] = OPT_LEVELS) -> dict[str, Runner]:
    """How to run an export: qonnx's ``execute_onnx`` for ``qonnx`` files, else onnxruntime per optimisation level."""
    if meta.get("format") == "qonnx":
        wrapper = require("qonnx.core.modelwrapper")
        return {"qonnx": QonnxRunner(wrapper.ModelWrapper(model), threads)}
    return {f"ort_opt_{level}": ort_runner(ort_session(str(path), threads, optimize=level == "on"))
            for level in opt_levels}


def verify(teacher: Teacher, config: TrisegConfig | None, path: str | Path, split: Split, batch_size: int,
           threads: int = 1, opt_levels: tuple[str, ...] = OPT_LEVELS) -> dict[str, Any]:
    """Run the export in ``path`` and the torch student on ``split``; agreement per runtime setting.

    ``opt_levels`` picks onnxruntime's graph optimisations (``off``, ``on``) for ``onnx`` files;
    ``qonnx`` files run once in qonnx's ``execute_onnx``.
    """
    model, meta = load_export(path)
    check_export(meta, path, teacher, config)
    runners = runners_for(path, model, meta, threads, opt_levels)
    stats = compare({"torch": teacher}, config, runners, split, batch_size)
    report: dict[str, Any] = {
        "file": str(path), "format": meta.get("format"), "ops": meta.get("ops"), "model": teacher.name,
        "config": meta.get("config_file") or None, "engine": torch.backends.quantized.engine,
        "images": len(split), "debug_outputs": any(s["torch"].taps for s in stats.values()),
        "runs": {name: s["torch"].as_dict() for name, s in stats.items()}, "file_ops": op_counts(model),
    }
    if "ort_opt_on" in runners:
        report["optimised_ops"] = optimised_ops(path, threads)
    return report


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A short human-readable account of a :func:`verify` report."""
    lines = [f"{report['file']} ({report['format']}, {report['ops']} ops) vs torch INT8 student "
             f"({report['engine']} kernels), {report['images']} images"]
    for name, r in report["runs"].items():
        lines.append(f"  {name}: top-1 agreement {r['top1_agreement']:.3f} %, identical logits "
                     f"{r['identical_logits']:.2f} %, max |logit diff| {r['max_logit_diff']:.4g}, accuracy "
                     f"{r['accuracy_runtime']:.2f} % (torch {r['accuracy_torch']:.2f} %)")
        for tap, share in r["equal_codes"].items():
            lines.append(f"    {tap:<24} {share:9.5f} % equal ({r['different_codes'][tap]} differ)")
    if not report["debug_outputs"]:
        lines.append("  (export with --debug-taps to compare the codes at every tap)")
    return lines
