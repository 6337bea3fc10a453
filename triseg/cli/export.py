"""Modes of the deployable export: export (alias export_triseg) and verify-export."""

from __future__ import annotations

from pathlib import Path

from triseg.analysis.sensitivity import search_output_dir
from triseg.approx.config import config_path
from triseg.artifacts import write_json
from triseg.cli.common import prepare
from triseg.cli.modes import Mode
from triseg.export import FORMATS, ExportRequest, check_output, default_output, export
from triseg.export.deps import require
from triseg.jobs import ExportConfig, VerifyExportConfig
from triseg.search.job import load_data
from triseg.teacher import load_result_teacher, load_teacher


def export_mode(cfg: ExportConfig) -> None:
    """Check the packages and the output path, load the teacher and the config, write the file.

    The CLI has checked the path options on disk already; the default output path is checked here.
    """
    prepare(cfg)
    for package in FORMATS[cfg.format].packages:
        require(package)
    out = check_output(cfg.output or default_output(cfg.output_dir, cfg.model, cfg.config_path, cfg.format))
    if cfg.config_path:
        teacher, config, _ = load_result_teacher(cfg.config_path, cfg.model, cfg.output_dir,
                                                 search_output_dir(config_path(cfg.config_path), None), cfg.engine,
                                                 "cpu", cfg.backend, cfg.allow_other_teacher)
    else:
        teacher, config = load_teacher(cfg.model, cfg.output_dir, cfg.engine, device="cpu", backend=cfg.backend), None
    path = export(ExportRequest(teacher, config, cfg.config_path, cfg.debug_taps, cfg.onnx_ops), cfg.format, out)
    what = f"student of {cfg.config_path}" if config else "teacher"
    print(f"{cfg.model} INT8 {what} -> {path} ({cfg.format}, {path.stat().st_size} bytes)")


def verify_export_mode(cfg: VerifyExportConfig) -> None:
    """Run the file and the torch student on a split; print agreement and codes, optionally write JSON."""
    from triseg.export.verify import summary_lines, verify

    prepare(cfg)
    require("onnx")
    require("onnxruntime")
    teacher = load_teacher(cfg.model, cfg.output_dir, cfg.engine, device="cpu", backend=cfg.backend)
    config = teacher.load_config(cfg.config_path) if cfg.config_path else None
    split = getattr(load_data(cfg), cfg.split).take(cfg.max_images)
    levels = ("off", "on") if cfg.ort_optimization == "both" else (cfg.ort_optimization,)
    report = verify(teacher, config, Path(cfg.onnx), split, cfg.batch_size, cfg.workers or 0, levels)
    print("\n".join(summary_lines(report)))
    if cfg.report_file:
        write_json(report, cfg.report_file)
        print(f"-> {cfg.report_file}")


EXPORT_HELP = "write the INT8 teacher or a config's student as onnx, qonnx or a C header -> <output-dir>/export/"
MODES = [
    Mode("export", EXPORT_HELP, ExportConfig, export_mode),
    Mode("export_triseg", "alias of export", ExportConfig, export_mode),
    Mode("verify-export", "compare an exported file in onnxruntime (or qonnx) with the torch INT8 student, image by "
                          "image", VerifyExportConfig, verify_export_mode),
]
