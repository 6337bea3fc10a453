"""zoo_add: copy a model's three stages into the zoo with a manifest entry (accuracy, command, sha256)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from triseg import artifacts
from triseg.artifacts import sha256
from triseg.cli.common import prepare, write_json
from triseg.cli.modes import Mode
from triseg.errors import TrisegError
from triseg.jobs import ZooAddConfig


def zoo_add(args: ZooAddConfig) -> None:
    prepare(args)
    zoo = Path(args.zoo_dir or artifacts.ZOO_DIR)
    eval_file = Path(args.output_dir) / f"{args.model}_int8_eval.json"
    if not eval_file.exists():
        raise TrisegError(f"{eval_file} not found: run eval_int8 first")
    evaluation = json.loads(eval_file.read_text())
    float_blob = artifacts.read_stage(args.output_dir, args.model, "float")
    files = {}
    for stage in artifacts.STAGES:
        src = artifacts.stage_path(args.output_dir, args.model, stage)
        if not src.exists():
            raise TrisegError(f"{src} not found: run {artifacts.STAGES[stage][1]} first")
        dst = artifacts.stage_path(zoo, args.model, stage)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        files[stage] = {"file": dst.name, "sha256": sha256(dst), "bytes": dst.stat().st_size}
    manifest_path = zoo / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[args.model] = {
        "backend": evaluation["backend"],
        "acc_float_test": round(float_blob["meta"]["test_acc"], 2),
        "acc_qat_test": round(evaluation["acc_qat"], 2),
        "acc_int8_test": round(evaluation["acc_int8"], 2),
        "int8_qat_top1_agreement": round(evaluation["top1_agreement"], 2),
        "test_images": evaluation["images"],
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
