"""zoo_add: copy a model's three stages into the zoo with a manifest entry (accuracy, command, sha256)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from triseg import artifacts
from triseg.artifacts import sha256
from triseg.artifacts import write_json
from triseg.cli.modes import Mode
from triseg.errors import TrisegError
from triseg.jobs import ZooAddConfig
from triseg.paths import check_output_file


def _read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or damaged file is a one-line error saying ``fix``."""
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrisegError(f"{what} {path} is damaged ({exc}): {fix}") from None
    if not isinstance(obj, dict):
        raise TrisegError(f"{what} {path} is not a JSON object: {fix}")
    return obj


def zoo_add(args: ZooAddConfig) -> None:
    zoo = Path(args.zoo_dir or artifacts.ZOO_DIR)
    manifest_path = zoo / "manifest.json"
    check_output_file(manifest_path)
    eval_file = Path(args.output_dir) / f"{args.model}_int8_eval.json"
    if not eval_file.exists():
        raise TrisegError(f"{eval_file} not found: run eval_int8 first")
    evaluation = _read_json(eval_file, "INT8 evaluation", "run eval_int8 again")
    try:
        acc = {k: round(float(evaluation[k]), 2) for k in ("acc_qat", "acc_int8", "top1_agreement")}
        backend, images = str(evaluation["backend"]), int(evaluation["images"])
    except (KeyError, TypeError, ValueError) as exc:
        raise TrisegError(f"INT8 evaluation {eval_file} lacks {exc}: run eval_int8 again") from None
    sources = {stage: artifacts.stage_path(args.output_dir, args.model, stage) for stage in artifacts.STAGES}
    for stage, src in sources.items():
        if not src.is_file():
            raise TrisegError(f"{src} not found: run {artifacts.STAGES[stage][1]} first")
    blobs = {stage: artifacts.read_stage_file(src, args.model, stage) for stage, src in sources.items()}
    meta = blobs["float"].get("meta")
    float_acc = meta.get("test_acc") if isinstance(meta, dict) else None
    if not isinstance(float_acc, (int, float)):
        raise TrisegError(f"{sources['float']} records no test accuracy: run train_float again")
    manifest = _read_json(manifest_path, "zoo manifest", "repair it or restore it from git") \
        if manifest_path.exists() else {}
    for src in sources.values():
        check_output_file(zoo / src.name)
    files = {}
    for stage, src in sources.items():
        dst = zoo / src.name
        artifacts.atomic_write_bytes(src.read_bytes(), dst)
        files[stage] = {"file": dst.name, "sha256": sha256(dst), "bytes": dst.stat().st_size}
    manifest[args.model] = {
        "backend": backend,
        "acc_float_test": round(float(float_acc), 2),
        "acc_qat_test": acc["acc_qat"],
        "acc_int8_test": acc["acc_int8"],
        "int8_qat_top1_agreement": acc["top1_agreement"],
        "test_images": images,
        "commands": args.command,
        "files": files,
    }
    write_json(dict(sorted(manifest.items())), manifest_path)
    print(f"{args.model} -> {zoo} (float {manifest[args.model]['acc_float_test']}%, "
          f"INT8 {manifest[args.model]['acc_int8_test']}%)")


MODES = [
    Mode("zoo_add", "copy {model}_float/qat/int8 files from --output-dir into the zoo and update its manifest",
         ZooAddConfig, zoo_add),
]
