"""The student's maps as a C header for RTL/HLS designers: per approximated layer the activation scale and
zero point, t1/v1/t2/v2/tmax, and the 256-entry table from uint8 value to mapped uint8 value.

``notes`` (layer -> comment lines) is the hook for per-layer cost-model counts; a result's measured
coverage (mapped / changed / zeroed shares) is written as comments when the result has it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from triseg.approx.config import LayerCodes
from triseg.approx.lut import quint8_table
from triseg.export.request import ExportRequest


@dataclass
class HeaderLayer:
    """One approximated layer as the header describes it."""

    name: str
    tap: str
    scale: float
    zero_point: int
    codes: LayerCodes
    notes: list[str]

    @property
    def table(self) -> np.ndarray:
        """The 256-entry uint8 table: mapped value of every uint8 value q."""
        return quint8_table(self.codes, self.zero_point).numpy()


def identifier(text: str) -> str:
    """An upper-case C identifier fragment: ``layer1.0.conv1`` -> ``LAYER1_0_CONV1``."""
    out = re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_").upper()
    return f"L{out}" if not out or out[0].isdigit() else out


def _float(v: float) -> str:
    """A float32 literal that reads back to the same float32 (9 significant digits)."""
    return f"{float(np.float32(v)):.9e}f"


def _comment(line: str) -> str:
    return " * " + line.replace("*/", "* /") if line else " *"


def header_text(model: str, backend: str, layers: list[HeaderLayer], source: list[str]) -> str:
    """The header; ``source`` lines (config, teacher file) go into the leading comment."""
    prefix = f"TRISEG_{identifier(model)}"
    guard = f"{prefix}_MAPS_H"
    out = ["/*", _comment(f"Tri-segment activation maps of {model} ({backend} INT8), written by triseg export."),
           *[_comment(s) for s in source], " *",
           " * Activations are uint8 values q; code = q - zero_point, real value = scale * code.",
           " * The map acts on codes: (0, t1] -> 0, (t1, t2] -> v1, (t2, tmax] -> v2; zero, negative codes and",
           " * codes above tmax are unchanged. <LAYER>_TABLE[q] is the mapped uint8 value for every q in 0..255.",
           " */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stdint.h>", "",
           f"#define {prefix}_NUM_LAYERS {len(layers)}", ""]
    for layer in layers:
        p = f"{prefix}_{identifier(layer.name)}"
        c = layer.codes
        out += [f"/* {layer.name} (tap {layer.tap})"]
        out += [_comment(line) for line in layer.notes]
        out += [" */", f"#define {p}_SCALE {_float(layer.scale)}", f"#define {p}_ZERO_POINT {layer.zero_point}",
                f"#define {p}_T1 {c.t1}", f"#define {p}_V1 {c.v1}", f"#define {p}_T2 {c.t2}", f"#define {p}_V2 {c.v2}",
                f"#define {p}_TMAX {c.tmax}", f"static const uint8_t {p}_TABLE[256] = {{"]
        table = [int(v) for v in layer.table]
        rows = [", ".join(f"{v:3d}" for v in table[i:i + 16]) for i in range(0, 256, 16)]
        out += [f"    {row}," if i < len(rows) - 1 else f"    {row}" for i, row in enumerate(rows)]
        out += ["};", ""]
    struct = f"{prefix.lower()}_layer_t"
    out += ["typedef struct {", "    const char *name;", "    float scale;", "    int32_t zero_point;",
            "    int32_t t1, v1, t2, v2, tmax;", "    const uint8_t *table;", f"}} {struct};", ""]
    entries = []
    for layer in layers:
        p = f"{prefix}_{identifier(layer.name)}"
        entries.append(f'    {{"{layer.name}", {p}_SCALE, {p}_ZERO_POINT, {p}_T1, {p}_V1, {p}_T2, {p}_V2, '
                       f"{p}_TMAX, {p}_TABLE}}")
    out += [f"static const {struct} {prefix}_LAYERS[{prefix}_NUM_LAYERS] = {{", ",\n".join(entries), "};", ""]
    out += [f"#endif /* {guard} */", ""]
    return "\n".join(out)


def coverage_notes(extra: dict, layer: str) -> list[str]:
    """Comment lines with a result's measured coverage of ``layer``, if the result records it."""
    cov = extra.get("coverage", {}).get("layers", {}).get(layer) if isinstance(extra.get("coverage"), dict) else None
    if not isinstance(cov, dict):
        return []
    shares = [f"{key.replace('_share', '')} {100 * cov[key]:.2f} %" for key in ("mapped_share", "changed_share",
                                                                                "zeroed_share") if key in cov]
    return [f"result coverage of the activations: {', '.join(shares)}"] if shares else []


def hardware_notes(extra: dict, layer: str) -> list[str]:
    """Comment lines with the cost model's counts of the layers ``layer``'s tap feeds, if the result has them."""
    hw = extra.get("hardware")
    if not isinstance(hw, dict) or not isinstance(hw.get("layers"), dict):
        return []
    return [f"feeds {name}: {c['macs_per_image']:.0f} MACs/image, skipped {100 * c['skipped_share']:.2f} %, "
            f"selected {100 * c['selected_share']:.2f} %, multiplied {100 * c['multiplied_share']:.2f} % "
            f"({hw.get('split', '?')} split, cost model)"
            for name, c in hw["layers"].items() if isinstance(c, dict) and c.get("source") == layer]


def render(req: ExportRequest) -> bytes:
    """The ``c-header`` format: the maps of an export request's config (the request must have one)."""
    assert req.config is not None
    layers = [HeaderLayer(name, req.teacher.model.tap_name(name), *req.graph.tap_qparams(name), codes,
                          coverage_notes(req.config.extra, name) + hardware_notes(req.config.extra, name)
                          + list(req.layer_notes.get(name, [])))
              for name, codes in req.layers.items()]
    t = req.teacher
    source = [f"config: {req.config_file}", f"teacher: {t.path} (sha256 {t.sha256})"]
    return header_text(t.name, t.backend, layers, source).encode()
