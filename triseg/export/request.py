"""What an export writes: the teacher, the optional config and the format options."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from triseg.approx.config import LayerCodes, TrisegConfig
from triseg.export.structure import IntGraph, trace
from triseg.teacher import Teacher


@dataclass
class ExportRequest:
    """An export of ``teacher`` with the maps of ``config`` (None: the plain INT8 teacher).

    ``layer_notes`` (layer -> comment lines) is the hook for a cost model's per-layer counts in the C header.
    """

    teacher: Teacher
    config: TrisegConfig | None = None
    config_file: str | None = None
    debug_taps: bool = False
    onnx_ops: str = "integer"
    layer_notes: dict[str, list[str]] = field(default_factory=dict)

    @property
    def layers(self) -> dict[str, LayerCodes]:
        """The maps to install (layer -> codes); empty for the teacher."""
        return {} if self.config is None else dict(self.config.layers)

    @functools.cached_property
    def graph(self) -> IntGraph:
        """The teacher's integer structure (traced once)."""
        return trace(self.teacher.model, self.teacher.name)
