"""zoo_add: copy a model's stages into the zoo with a manifest entry (accuracy, commands, sha256).

Large models can ship lighter: ``--half-qat`` stores the QAT model's conv and linear weights in float16
(quantization state, biases and BatchNorm stay float32, so the converted scales are the same; loading
upcasts the weights), and ``--without-float`` leaves the float stage out (and removes an older zoo copy of
it). The manifest records what was left out or stored in half precision and the commands that rebuild it.

lsq-zoo-add: ship a finished LSQ run (an lsq-train float model, or an lsq-qat model to start another from)
in zoo/lsq/ without its optimizer state, with its test accuracy, commands and sha256 in zoo/lsq/manifest.json.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from triseg import artifacts
from triseg.artifacts import sha256
from triseg.artifacts import write_json
from triseg.cli.modes import Mode
from triseg.errors import TrisegError
from triseg.jobs import LsqZooAddConfig, ZooAddConfig
from triseg.paths import check_output_file, read_json


def _read_json(path: Path, what: str, fix: str) -> dict[str, Any]:
    """A JSON object from ``path``; a missing, unreadable or damaged file is a one-line error saying ``fix``."""
    obj = read_json(path, what, fix)
    if not isinstance(obj, dict):
        raise TrisegError(f"{what} {path} is not a JSON object: {fix}")
    return obj


def _shipped(path: Path) -> dict[str, Any]:
    """A zoo file's manifest fields: its name, sha256 and size."""
    return {"file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size}


def half_weights(blob: dict[str, Any]) -> bytes:
    """A stage file whose float32 tensors of two or more dimensions (conv and linear weights) are float16.

    One-dimensional tensors (biases, BatchNorm, per-channel weight ranges, scales) stay float32, so the
    converted model keeps its scales; ``load_state_dict`` copies the float16 weights into float32 ones.
    """
    state = {k: v.half() if v.dtype == torch.float32 and v.dim() >= 2 else v for k, v in blob["state_dict"].items()}
    buf = io.BytesIO()
    torch.save({**blob, "state_dict": state, "float16_weights": True}, buf)
    return buf.getvalue()


def rebuild_command(model: str, stage: str, commands: list[str], shipped: list[str]) -> str:
    """The recorded commands that make ``stage`` again (with the earlier stages the zoo does not ship),
    else the modes to run."""
    order = list(artifacts.STAGES)
    needed = [s for s in order[:order.index(stage)] if s not in shipped] + [stage]
    steps = []
    for s in needed:
        mode = artifacts.STAGES[s][1]
        made = [c for c in commands if f"--mode {mode} " in f"{c} " or f"triseg {mode} " in f"{c} "]
        steps.append(made[0] if made else f"python main.py --mode {mode} --model {model}")
    return " && ".join(steps)


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
    artifacts.load_float(args.output_dir, args.model)  # each stage must load as the pipeline loads it
    _, qat_backend = artifacts.load_qat(args.output_dir, args.model)
    _, int8_backend = artifacts.load_int8(args.output_dir, args.model)
    if qat_backend != int8_backend:
        raise TrisegError(f"{sources['qat']} is for {qat_backend}, {sources['int8']} for {int8_backend}: run "
                          f"export_int8 again")
    if (evaluation.get("model"), backend) != (args.model, int8_backend):
        raise TrisegError(f"INT8 evaluation {eval_file} is of {evaluation.get('model')} on {backend}, not of "
                          f"{args.model} on {int8_backend}: run eval_int8 again")
    meta = blobs["float"].get("meta")
    float_acc = meta.get("test_acc") if isinstance(meta, dict) else None
    if not isinstance(float_acc, (int, float)):
        raise TrisegError(f"{sources['float']} records no test accuracy: run train_float again")
    manifest = _read_json(manifest_path, "zoo manifest", "repair it or restore it from git") \
        if manifest_path.exists() else {}
    for src in sources.values():
        check_output_file(zoo / src.name)
    left = {"float": args.without_float or args.without_qat, "qat": args.without_qat}
    shipped = [stage for stage in sources if not left.get(stage, False)]
    files: dict[str, dict[str, Any]] = {}
    for stage in shipped:
        src, dst = sources[stage], zoo / sources[stage].name
        half = stage == "qat" and args.half_qat
        artifacts.atomic_write_bytes(half_weights(blobs[stage]) if half else src.read_bytes(), dst)
        files[stage] = _shipped(dst)
        if half:
            files[stage]["float16_weights"] = (f"conv/linear weights stored in float16 (loading upcasts them; "
                                               f"export_int8 from it moves about 0.5 % of the INT8 weights by one "
                                               f"code: the shipped INT8 file is the teacher); float32 "
                                               f"({src.stat().st_size} bytes): "
                                               f"{rebuild_command(args.model, stage, args.command, shipped)}")
    left_out = {}
    for stage in sources:
        if stage not in shipped:
            (zoo / sources[stage].name).unlink(missing_ok=True)
            left_out[stage] = {"bytes": sources[stage].stat().st_size,
                               "rebuild": rebuild_command(args.model, stage, args.command, shipped)}
    manifest[args.model] = {
        "backend": backend,
        "acc_float_test": round(float(float_acc), 2),
        "acc_qat_test": acc["acc_qat"],
        "acc_int8_test": acc["acc_int8"],
        "int8_qat_top1_agreement": acc["top1_agreement"],
        "test_images": images,
        "commands": args.command,
        "files": files,
        **({"left_out": left_out} if left_out else {}),
    }
    write_json(dict(sorted(manifest.items())), manifest_path)
    print(f"{args.model} -> {zoo} (float {manifest[args.model]['acc_float_test']}%, "
          f"INT8 {manifest[args.model]['acc_int8_test']}%; {', '.join(shipped)} shipped)")


SHIPPED_LSQ_KEYS = ("kind", "meta", "model", "epoch", "history", "config")


def lsq_zoo_add(args: LsqZooAddConfig) -> None:
    """Copy a finished LSQ run's model into the LSQ zoo and record it in its manifest."""
    from triseg.lsq.train import load_lsq_checkpoint, model_from_checkpoint

    zoo = Path(args.zoo_dir) if args.zoo_dir else artifacts.ZOO_DIR / "lsq"
    dst, manifest_path = zoo / f"{args.name}.pt", zoo / "manifest.json"
    check_output_file(dst)
    check_output_file(manifest_path)
    run = Path(args.run_dir)
    ckpt = load_lsq_checkpoint(run / "checkpoint.pt")
    metrics = _read_json(run / "metrics.json", "run metrics", "finish the run (it writes them at its end)") \
        if (run / "metrics.json").is_file() else {}
    test_acc, epochs, sizes = metrics.get("test_acc"), metrics.get("epochs"), metrics.get("sizes")
    if not isinstance(test_acc, (int, float)) or epochs != ckpt.get("epoch"):
        raise TrisegError(f"{run} is not a finished run (its metrics.json records no test accuracy for the "
                          f"checkpoint's epoch {ckpt.get('epoch')}): finish it with --resume first")
    try:
        model_from_checkpoint(ckpt)  # what lsq-qat --float-checkpoint/--init-checkpoint and lsq-infer will do
    except TrisegError as exc:
        raise TrisegError(f"{run / 'checkpoint.pt'}: {exc}") from None
    manifest = _read_json(manifest_path, "LSQ zoo manifest", "repair it or restore it from git") \
        if manifest_path.exists() else {}
    buf = io.BytesIO()
    torch.save({k: ckpt[k] for k in SHIPPED_LSQ_KEYS if k in ckpt}, buf)
    artifacts.atomic_write_bytes(buf.getvalue(), dst)
    manifest[args.name] = {"kind": ckpt["kind"], **ckpt["meta"], "epochs": epochs,
                           "acc_test": round(float(test_acc), 2),
                           "test_images": sizes.get("test") if isinstance(sizes, dict) else None,
                           "commands": args.command, **_shipped(dst)}
    write_json(dict(sorted(manifest.items())), manifest_path)
    print(f"{args.name} ({ckpt['kind']}, test {manifest[args.name]['acc_test']}%) -> {dst}")


MODES = [
    Mode("zoo_add", "copy {model}_float/qat/int8 files from --output-dir into the zoo and update its manifest",
         ZooAddConfig, zoo_add),
    Mode("lsq-zoo-add", "ship a finished lsq-train/lsq-qat run in zoo/lsq/ (model and history, no optimizer state) "
         "with its test accuracy, commands and sha256", LsqZooAddConfig, lsq_zoo_add),
]
