"""Deployable exports of the INT8 teacher or student, and their verification in independent runtimes.

    from triseg import api
    from triseg.export import ExportRequest, export

    teacher = api.load_teacher("lenet5", device="cpu")
    config = teacher.load_config("results/tmax_sweep/lenet5_ppo_p30.json")
    export(ExportRequest(teacher, config, "results/tmax_sweep/lenet5_ppo_p30.json"), "onnx", "lenet5_p30.onnx")

Formats (:data:`FORMATS`): ``onnx`` (onnxruntime's CPU provider runs it as it is), ``qonnx`` (maps as
QONNX MultiThreshold nodes, for FINN) and ``c-header`` (scales, zero points, codes and tables).
onnx, onnxruntime and qonnx are the optional extra ``export`` and are imported only when used.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from triseg import paths
from triseg.errors import TrisegError
from triseg.export import c_header, onnx_graph, qonnx_graph
from triseg.export.deps import require
from triseg.export.request import ExportRequest


@dataclass(frozen=True)
class ExportFormat:
    """One format: its file suffix, the packages it needs, whether it needs a config, and its writer."""

    name: str
    suffix: str
    packages: tuple[str, ...]
    needs_config: bool
    render: Callable[[ExportRequest], bytes]


FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", ("onnx",), False, onnx_graph.render),
    ExportFormat("qonnx", ".qonnx.onnx", ("onnx", "qonnx"), False, qonnx_graph.render),
    ExportFormat("c-header", ".h", (), True, c_header.render),
)}


def export_format(name: str) -> ExportFormat:
    """The format registered as ``name``; a one-line error lists the formats."""
    try:
        return FORMATS[name]
    except KeyError:
        raise TrisegError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}") from None


def default_output(output_dir: str | Path, model: str, config_file: str | None, fmt: str) -> Path:
    """``<output-dir>/export/<model>[_<config stem>]<suffix>``."""
    stem = model if config_file is None else f"{model}_{Path(config_file.replace(chr(92), '/')).stem}"
    return Path(output_dir) / "export" / f"{stem}{export_format(fmt).suffix}"


def check_output(path: str | os.PathLike) -> Path:
    """``path`` if a file can be written there (judged without writing); else a one-line error."""
    problem = paths.file_problem(path)
    if problem is not None:
        raise TrisegError(f"output {path} {problem}")
    return Path(path)


def export(req: ExportRequest, fmt: str, output: str | os.PathLike) -> Path:
    """Write ``req`` in format ``fmt`` to ``output``: everything is checked and rendered before the file is
    written, to a temporary file beside it that is then renamed."""
    f = export_format(fmt)
    for package in f.packages:
        require(package)
    if f.needs_config and req.config is None:
        raise TrisegError(f"format {fmt} writes a config's maps: pass --config-path")
    path = check_output(output)
    data = f.render(req)
    with paths.atomic_open(path, "wb") as fh:
        fh.write(data)
    return path


__all__ = ["FORMATS", "ExportFormat", "ExportRequest", "check_output", "default_output", "export", "export_format"]
