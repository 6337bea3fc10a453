"""Per-layer tri-segment codes, the legality rules, and the result JSON format.

A layer's map acts on INT8 activation codes (code = quantized value - zero point, so 0 is a real
zero): codes in (0, t1] -> 0, (t1, t2] -> v1, (t2, tmax] -> v2; zero, negative codes and codes
above tmax are unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path, PureWindowsPath
from typing import Any, Iterable

from triseg.approx.schema import CONFIG_SCHEMA, check
from triseg.errors import TrisegError
from triseg.paths import read_json

T1_MIN, T1_MAX = 2, 10
T1_TMAX_GAP, T2_T1_GAP, T2_TMAX_GAP = 8, 4, 4
MIN_TMAX = T1_MIN + T1_TMAX_GAP
CODES = ("t1", "v1", "t2", "v2", "tmax")  # the fields of a layer's map, in LayerCodes and JSON order
CHOICE_ORDER = ("t1", "t2", "v1", "v2")  # the order codes are chosen in: each range depends on the earlier ones


@dataclass(frozen=True)
class LayerCodes:
    """The five integer codes of one layer's map."""

    t1: int
    v1: int
    t2: int
    v2: int
    tmax: int

    def to_json(self) -> dict[str, int]:
        return {"t1_code": self.t1, "v1_code": self.v1, "t2_code": self.t2, "v2_code": self.v2,
                "tmax_code": self.tmax}

    @classmethod
    def from_json(cls, layer: str, obj: Any) -> "LayerCodes":
        keys = ("t1_code", "v1_code", "t2_code", "v2_code", "tmax_code")
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            raise TrisegError(f"layer {layer}: needs integer keys {', '.join(keys)}")
        vals = [obj[k] for k in keys]
        if any(isinstance(v, bool) or not isinstance(v, int) for v in vals):
            raise TrisegError(f"layer {layer}: codes must be integers, got {dict(zip(keys, vals))}")
        return cls(*vals)


def t1_range(tmax: int) -> range:
    """Legal t1 for this tmax: [2, min(10, tmax - 8)]."""
    return range(T1_MIN, min(T1_MAX, tmax - T1_TMAX_GAP) + 1)


def t2_range(t1: int, tmax: int) -> range:
    """Legal t2: [t1 + 4, tmax - 4]."""
    return range(t1 + T2_T1_GAP, tmax - T2_TMAX_GAP + 1)


def v1_range(t1: int, t2: int) -> range:
    """Legal v1: [t1 + 1, t2 - 1]."""
    return range(t1 + 1, t2)


def v2_range(t2: int, tmax: int) -> range:
    """Legal v2: [t2 + 1, tmax]."""
    return range(t2 + 1, tmax + 1)


def approximable(tmax: int) -> bool:
    """Whether any legal config exists for this tmax (needs tmax >= 10)."""
    return tmax >= MIN_TMAX


def validate(layer: str, c: LayerCodes, top_code: int) -> LayerCodes:
    """Check every rule; a broken one raises a one-line error naming the layer and the rule."""
    rules = [
        (c.tmax <= top_code, f"tmax {c.tmax} must be <= {top_code}, the backend's top activation code"),
        (c.tmax >= MIN_TMAX, f"tmax {c.tmax} must be >= {MIN_TMAX}"),
        (c.t1 in t1_range(c.tmax), f"t1 {c.t1} must be in [{T1_MIN}, min({T1_MAX}, tmax-8)={min(T1_MAX, c.tmax - 8)}]"),
        (c.t2 in t2_range(c.t1, c.tmax), f"t2 {c.t2} must be in [t1+4, tmax-4] = [{c.t1 + 4}, {c.tmax - 4}]"),
        (c.v1 in v1_range(c.t1, c.t2), f"v1 {c.v1} must be in [t1+1, t2-1] = [{c.t1 + 1}, {c.t2 - 1}]"),
        (c.v2 in v2_range(c.t2, c.tmax), f"v2 {c.v2} must be in [t2+1, tmax] = [{c.t2 + 1}, {c.tmax}]"),
    ]
    for ok, rule in rules:
        if not ok:
            raise TrisegError(f"layer {layer}: {rule}")
    return c


@dataclass
class TrisegConfig:
    """A whole model's maps plus the result metadata written next to them."""

    model: str
    backend: str
    layers: dict[str, LayerCodes]
    extra: dict[str, Any]

    def validate(self, layer_names: Iterable[str], top_code: int) -> "TrisegConfig":
        """Every layer known to the model and every map legal."""
        known = list(layer_names)
        unknown = [name for name in self.layers if name not in known]
        if unknown:
            raise TrisegError(f"config layers {unknown} are not approximated layers of {self.model} "
                              f"({', '.join(known)})")
        for name, codes in self.layers.items():
            validate(name, codes, top_code)
        return self

    def to_json(self) -> dict[str, Any]:
        return {"layers": {k: v.to_json() for k, v in self.layers.items()}, "backend": self.backend,
                "model": self.model, **self.extra}

    @classmethod
    def from_json(cls, obj: Any, source: str = "config") -> "TrisegConfig":
        check(obj, CONFIG_SCHEMA, source, "triseg config")
        extra = {k: v for k, v in obj.items() if k not in ("layers", "model", "backend")}
        layers = {name: LayerCodes.from_json(name, codes) for name, codes in obj["layers"].items()}
        return cls(obj["model"], obj["backend"], layers, extra)


def config_path(path: str) -> Path:
    """Accept POSIX and Windows spellings (``.\\outputs\\tri_ppo_int_codes\\x.json``)."""
    if "\\" in path and not Path(path).exists():
        return Path(*PureWindowsPath(path).parts)
    return Path(path)


def load_config(path: str) -> TrisegConfig:
    """Read a result/config JSON; one-line errors for a missing or malformed file."""
    p = config_path(path)
    return TrisegConfig.from_json(read_json(p, "config"), str(p))


def as_dict(c: LayerCodes) -> dict[str, int]:
    """Plain field dict (t1, v1, t2, v2, tmax)."""
    return asdict(c)
