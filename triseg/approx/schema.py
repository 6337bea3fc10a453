"""The JSON Schema of config and result files, checked once where they are read.

A config file needs ``layers``, ``model`` and ``backend``; a search result also ``validation``, and its
``validation`` and ``metrics`` need the three accuracies. Every other field a reader uses
(the recorded teacher, coverage, cost-model counts, candidates, the Pareto front, the settings) is
optional but, when present, must have the type its readers expect, so no reader meets a string
where it wants a number. Fields nobody reads are free.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from triseg.errors import TrisegError

_NUM = {"type": "number"}
_INT = {"type": "integer"}
_STR = {"type": "string"}
_NUM_OR_NULL = {"type": ["number", "null"]}


def _obj(props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": props, "required": list(required)}


def _map(values: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values}


_LAYERS = _map({"type": "object"})  # each layer's codes: LayerCodes.from_json checks them
_ACCS = ("acc_teacher", "acc_student", "acc_drop")

CONFIG_SCHEMA: dict[str, Any] = _obj({
    "layers": _LAYERS,
    "model": _STR,
    "backend": _STR,
    "selection": _STR,
    "teacher": _obj({"file": _STR, "sha256": _STR, "backend": {"type": ["string", "null"]}, "val_acc": _NUM_OR_NULL}),
    "metrics": _obj({k: _NUM for k in _ACCS}),
    "validation": _obj({**{k: _NUM for k in _ACCS}, "candidates": {"type": "array", "items": _obj(
        {"reward": _NUM, "episode": _INT, "val_acc": _NUM, "val_drop": _NUM, "multiplies_left": _NUM},
        ("reward", "episode", "val_acc", "val_drop"))}}),
    "test_top1_agreement_with_teacher": _NUM_OR_NULL,
    "coverage": _obj({"split": _STR, "mapped_share": _NUM,
                      "layers": _map(_obj({k: _NUM for k in ("activations", "mapped_share", "changed_share",
                                                             "zeroed_share")}))}),
    "hardware": _obj({"split": _STR, "images": _INT,
                      "totals": _obj({"multiplies_left_vs_zero_skipping_int8": _NUM,
                                      "multiplies_left_vs_dense_int8": _NUM,
                                      "energy_estimate_pj_per_image": _map(_NUM)}),
                      "layers": _map(_obj({"kind": _STR, "source": {"type": ["string", "null"]},
                                           **{k: _NUM for k in ("macs_per_image", "skipped_share", "selected_share",
                                                                "multiplied_share", "weights",
                                                                "precomputed_products")}})),
                      "energy_table": _obj({"source": _STR, "unit": _STR})}),
    "pareto_front": {"type": "array", "items": _obj(
        {"val_drop": _NUM, "val_acc": _NUM, "multiplies_left": _NUM, "episode": _INT, "layers": _LAYERS},
        ("val_drop", "val_acc", "multiplies_left", "episode", "layers"))},
    "search": _STR,
    "seed": _INT,
    "episodes": _INT,
    "batch_size": _INT,
    "max_acc_drop": _NUM,
    "history_file": _STR,
    "tmax": _map(_INT),
    "split_sizes": _map(_INT),
}, ("layers", "model", "backend"))

RESULT_SCHEMA: dict[str, Any] = {
    **CONFIG_SCHEMA, "required": [*CONFIG_SCHEMA["required"], "validation"],
    "properties": {**CONFIG_SCHEMA["properties"],
                   **{key: {**CONFIG_SCHEMA["properties"][key], "required": list(_ACCS)}
                      for key in ("metrics", "validation")}}}

_SENSITIVITY_KEYS = ("drop_only", "drop_all_but", "recovered")
SENSITIVITY_SCHEMA: dict[str, Any] = _obj({
    "model": _STR, "split": _STR, "images": _NUM, "acc_teacher": _NUM, "acc_student": _NUM, "drop_full": _NUM,
    "ranking": {"type": "array", "items": _STR},
    "layers": _map(_obj({k: _NUM for k in _SENSITIVITY_KEYS}, _SENSITIVITY_KEYS)),
}, ("model", "split", "images", "acc_teacher", "acc_student", "drop_full", "ranking", "layers"))
"""``analyze_sensitivity``'s file, as the report reads it."""

_VALIDATORS = {id(s): Draft202012Validator(s) for s in (CONFIG_SCHEMA, RESULT_SCHEMA, SENSITIVITY_SCHEMA)}


def _line(error: ValidationError) -> str:
    """One error as ``where: what``, with the offending value cut short."""
    where = error.json_path
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else \
            " or ".join(error.validator_value)
        return f"{where} must be {expected}, not {_short(error.instance)}"
    return f"{where}: {error.message if len(error.message) <= 120 else error.message[:117] + '...'}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check(obj: Any, schema: dict[str, Any], source: str, what: str, fix: str = "") -> None:
    """A one-line error naming the first field of ``obj`` that breaks ``schema`` (and where it is), then ``fix``."""
    error = best_match(_VALIDATORS[id(schema)].iter_errors(obj))
    if error is not None:
        raise TrisegError(f"{source}: not a {what} ({_line(error)})" + (f": {fix}" if fix else ""))
