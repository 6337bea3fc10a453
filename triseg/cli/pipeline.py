"""Modes of the float -> QAT -> INT8 pipeline: models, train_float, train_qat, export_int8, eval_int8."""

from __future__ import annotations

from pathlib import Path

import torch

from triseg import artifacts, quant
from triseg.artifacts import write_json
from triseg.cli.common import backend, prepare, run_dir
from triseg.cli.modes import Mode
from triseg.jobs import EvalInt8Config, ExportInt8Config, ModelsConfig, TrainFloatConfig, TrainQATConfig
from triseg.models import MODELS, build_model
from triseg.paths import check_output_dir, check_output_file
from triseg.runlog import resolve_device
from triseg.search.job import load_data
from triseg.train import TrainConfig, evaluate, fit, predictions, qat_epoch_hook


def list_models(cfg: ModelsConfig) -> None:
    for name, cls in MODELS.items():
        print(f"{name}: layers {', '.join(cls.layers())}; attention {', '.join(cls.ATTENTION_LAYERS)}")


def _check_outputs(cfg: TrainFloatConfig | TrainQATConfig, stage: str, ckpt: Path) -> None:
    """Before any work: the stage file, the checkpoint and the TensorBoard folder can be written; --resume
    has a checkpoint."""
    check_output_file(artifacts.stage_path(cfg.output_dir, cfg.model, stage))
    check_output_file(ckpt)
    check_output_dir(run_dir(cfg, stage, cfg.seed))
    artifacts.resume_from(ckpt, cfg.resume, cfg.resume_or_start)


def train_float(cfg: TrainFloatConfig) -> None:
    prepare(cfg)
    device = resolve_device(cfg.device)
    ckpt = Path(cfg.output_dir) / "checkpoints" / f"{cfg.model}_float.ckpt"
    _check_outputs(cfg, "float", ckpt)
    data = load_data(cfg)
    tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, schedule=cfg.schedule,
                       weight_decay=cfg.weight_decay, seed=cfg.seed, max_train_batches=cfg.max_train_batches,
                       amp=cfg.amp)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model)
    hist = fit(model, data, tcfg, ckpt, run_dir(cfg, "float", cfg.seed), resume=cfg.resume, device=device,
               desc=f"{cfg.model} float", resume_or_start=cfg.resume_or_start)
    model.cpu()
    test_acc = evaluate(model, data.test)
    path = artifacts.save_stage(model, cfg.output_dir, cfg.model, "float", val_acc=hist["val_acc"],
                                test_acc=test_acc, config=tcfg.to_dict())
    print(f"{cfg.model} float: val {hist['val_acc']:.2f}% test {test_acc:.2f}% -> {path}")


def train_qat(cfg: TrainQATConfig) -> None:
    prepare(cfg)
    be = backend(cfg.backend)
    device = resolve_device(cfg.device)
    ckpt = Path(cfg.output_dir) / "checkpoints" / f"{cfg.model}_qat.ckpt"
    _check_outputs(cfg, "qat", ckpt)
    float_model = artifacts.load_float(cfg.output_dir, cfg.model)
    data = load_data(cfg)
    model = artifacts.prepare_for_qat(float_model, be)
    tcfg = TrainConfig(epochs=cfg.qat_epochs, lr=cfg.qat_lr, batch_size=cfg.batch_size, seed=cfg.seed,
                       channels_last=False, max_train_batches=cfg.max_train_batches)
    hook = qat_epoch_hook(cfg.qat_epochs, cfg.freeze_bn_epoch, cfg.freeze_observer_epoch)
    hist = fit(model, data, tcfg, ckpt, run_dir(cfg, "qat", cfg.seed), resume=cfg.resume, device=device,
               epoch_hook=hook, desc=f"{cfg.model} qat", resume_or_start=cfg.resume_or_start)
    model.cpu()
    path = artifacts.save_stage(model, cfg.output_dir, cfg.model, "qat", backend=be, val_acc=hist["val_acc"],
                                config=tcfg.to_dict())
    print(f"{cfg.model} QAT ({be}): val {hist['val_acc']:.2f}% -> {path}")


def export_int8(cfg: ExportInt8Config) -> None:
    prepare(cfg)
    check_output_file(artifacts.stage_path(cfg.output_dir, cfg.model, "int8"))
    qat_model, be = artifacts.load_qat(cfg.output_dir, cfg.model)
    backend(cfg.backend, be)
    int8 = quant.convert(qat_model, be)
    path = artifacts.save_stage(int8, cfg.output_dir, cfg.model, "int8", backend=be)
    print(f"{cfg.model} INT8 ({be}) -> {path}")


def eval_int8(cfg: EvalInt8Config) -> None:
    prepare(cfg)
    out = check_output_file(Path(cfg.output_dir) / f"{cfg.model}_int8_eval.json")
    int8, be = artifacts.load_int8(cfg.output_dir, cfg.model, cfg.engine)
    backend(cfg.backend, be)
    qat_model, _ = artifacts.load_qat(cfg.output_dir, cfg.model)
    test = load_data(cfg).test
    p_int8 = predictions(int8, test, cfg.batch_size)
    p_qat = predictions(qat_model, test, cfg.batch_size)
    result = {
        "model": cfg.model, "backend": be, "images": len(test),
        "acc_int8": 100.0 * p_int8.eq(test.y).float().mean().item(),
        "acc_qat": 100.0 * p_qat.eq(test.y).float().mean().item(),
        "top1_agreement": 100.0 * p_int8.eq(p_qat).float().mean().item(),
    }
    write_json(result, out)
    print(f"{cfg.model} INT8 ({be}) test {result['acc_int8']:.2f}% | QAT {result['acc_qat']:.2f}% | "
          f"top-1 agreement {result['top1_agreement']:.2f}% on {len(test)} images -> {out}")


MODES = [
    Mode("models", "list the registered models, their approximated and attention layers", ModelsConfig,
         list_models),
    Mode("train_float", "train the float model -> {model}_float_unfused.pth", TrainFloatConfig, train_float),
    Mode("train_qat", "QAT fine-tuning of the float model -> {model}_qat_preconvert.pth", TrainQATConfig, train_qat),
    Mode("export_int8", "convert the QAT model to a real INT8 model -> {model}_int8.pth", ExportInt8Config,
         export_int8),
    Mode("eval_int8", "test accuracy of the INT8 model and its top-1 agreement with the QAT model", EvalInt8Config,
         eval_int8),
]
