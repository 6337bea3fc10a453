"""Float training and quantization-aware fine-tuning, with per-epoch checkpoints and exact resume."""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from triseg import quant
from triseg.artifacts import atomic_save, load_checkpoint, resume_from
from triseg.data import Cifar10, Split, batches, num_batches
from triseg.errors import TrisegError
from triseg.options import POSITIVE, Options, above, at_least, between, option
from triseg.runlog import tensorboard_writer


def _onecycle(cfg: "TrainConfig", opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    # warm up for a quarter of the steps, and at least two so that tiny smoke runs stay valid
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=max(0.25, 2 / total))


def _cosine(cfg: "TrainConfig", opt: torch.optim.Optimizer, total: int) -> torch.optim.lr_scheduler.LRScheduler:
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)


SCHEDULES = {"onecycle": _onecycle, "cosine": _cosine}
# how a run computes, not what it trains: may change when a run is resumed (on another machine or device)
RUN_ONLY = frozenset({"amp"})


@dataclass
class TrainConfig(Options):
    """Hyperparameters of one training run (float or QAT)."""

    epochs: int = option(30, "training epochs", check=POSITIVE)
    lr: float = option(0.05, "peak learning rate", check=above(0))
    batch_size: int = option(128, "batch size", check=POSITIVE)
    momentum: float = option(0.9, "SGD momentum (Nesterov)", check=between(0, 1))
    weight_decay: float = option(5e-4, "SGD weight decay", check=at_least(0))
    label_smoothing: float = option(0.1, "label smoothing of the cross-entropy", check=between(0, 1))
    schedule: str = option("onecycle", "learning-rate schedule", choices=lambda: list(SCHEDULES))
    seed: int = option(0, "random seed", check=at_least(0))
    channels_last: bool = option(True, "channels_last memory format on the CPU")
    amp: bool = option(False, "mixed precision: bfloat16 autocast of the training passes (the weights stay float32)")
    max_train_batches: int | None = option(None, "cap batches per epoch (smoke runs)", check=POSITIVE)


def evaluate(model: nn.Module, split: Split, batch_size: int = 256, device: str = "cpu",
             channels_last: bool = False, finite: bool = False) -> float:
    """Top-1 accuracy in percent (``finite``: non-finite outputs are an error)."""
    hits = predictions(model, split, batch_size, device, channels_last, finite).eq(split.y)
    return 100.0 * hits.float().mean().item()


@torch.no_grad()
def predictions(model: nn.Module, split: Split, batch_size: int = 256, device: str = "cpu",
                channels_last: bool = False, finite: bool = False) -> torch.Tensor:
    """Predicted labels for a whole split (model in eval mode); ``finite`` makes non-finite outputs an error."""
    model.eval()
    out = []
    for x, _ in batches(split, batch_size):
        x = x.to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        if finite and not torch.isfinite(logits).all():
            raise TrisegError("training diverged (non-finite outputs on the validation split): lower the learning rate")
        out.append(logits.argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def _scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    return SCHEDULES[cfg.schedule](cfg, opt, max(4, cfg.epochs * steps))


EpochHook = Callable[[nn.Module, int], None]


def fit(
    model: nn.Module,
    data: Cifar10,
    cfg: TrainConfig,
    checkpoint: Path,
    log_dir: Path,
    resume: bool = False,
    device: str = "cpu",
    epoch_hook: EpochHook | None = None,
    desc: str = "train",
    resume_or_start: bool = False,
) -> dict[str, float]:
    """Train ``model`` with SGD and a one-cycle/cosine schedule; checkpoint after every epoch.

    Each epoch draws its shuffling, augmentation and dropout from seeds derived from
    ``(cfg.seed, epoch)``, so a run resumed from a checkpoint ends with the same weights as an
    uninterrupted one. ``epoch_hook(model, epoch)`` runs at the start of each epoch (QAT freezing).
    ``resume`` needs the checkpoint (a one-line error without it); ``resume_or_start`` uses it when present.
    """
    use_checkpoint = resume_from(checkpoint, resume, resume_or_start)
    model.to(device)
    use_cl = cfg.channels_last and device == "cpu"
    if use_cl:
        model.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 else no_decay).append(p)
    opt = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
    )
    steps = num_batches(data.train, cfg.batch_size, drop_last=True)
    if cfg.max_train_batches:
        steps = min(steps, cfg.max_train_batches)
    if steps == 0:
        raise TrisegError(f"training split has {len(data.train)} images, fewer than one batch of {cfg.batch_size}")
    if len(data.val) == 0:
        raise TrisegError("the validation split is empty: pass --val-size of at least 1 (or use more training images)")
    sched = _scheduler(cfg, opt, steps)
    start, history = 0, {}
    if use_checkpoint:
        state = load_checkpoint(checkpoint, "training checkpoint", device)
        if _identity(state.get("config")) != _identity(asdict(cfg)) \
                or state.get("data", _data_identity(data)) != _data_identity(data):
            raise TrisegError(f"{checkpoint} was made with other settings or data; pass the same options to resume, "
                              f"or drop --resume")
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            start, history = int(state["epoch"]), dict(state["history"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise TrisegError(f"training checkpoint {checkpoint} does not fit this model ({type(exc).__name__}): "
                              f"delete it to start again, or drop --resume") from None
    writer = tensorboard_writer(log_dir)
    stamp = checkpoint.stat().st_mtime_ns if checkpoint.exists() else None
    try:
        for epoch in range(start, cfg.epochs):
            torch.manual_seed(cfg.seed * 100_003 + epoch)
            gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            if epoch_hook is not None:
                epoch_hook(model, epoch)
            train_loss, train_acc = _train_epoch(model, data.train, cfg, opt, sched, steps, gen, device, use_cl,
                                                 f"{desc} {epoch + 1}/{cfg.epochs}")
            val_acc = evaluate(model, data.val, device=device, channels_last=use_cl, finite=True)
            history = {"train_loss": train_loss, "train_acc": train_acc, "val_acc": val_acc}
            for key, value in history.items():
                writer.add_scalar(f"{desc}/{key}", value, epoch + 1)
            writer.add_scalar(f"{desc}/lr", opt.param_groups[0]["lr"], epoch + 1)
            writer.flush()
            tqdm.write(f"{desc} epoch {epoch + 1}/{cfg.epochs}: loss {history['train_loss']:.4f} "
                       f"train {history['train_acc']:.2f}% val {val_acc:.2f}%")
            atomic_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                         "epoch": epoch + 1, "history": history, "config": asdict(cfg), "data": _data_identity(data)},
                        checkpoint)
    except TrisegError:
        if (checkpoint.stat().st_mtime_ns if checkpoint.exists() else None) == stamp:
            writer.discard()  # no checkpoint of this run to resume: take back its TensorBoard files
        raise
    writer.close()
    if use_cl:
        model.to(memory_format=torch.contiguous_format)
    return history


def _identity(config: dict | None) -> dict | None:
    """The settings a checkpoint must share with the run that resumes it (all but :data:`RUN_ONLY`)."""
    return None if config is None else {k: v for k, v in config.items() if k not in RUN_ONLY}


def _train_epoch(model: nn.Module, split: Split, cfg: TrainConfig, opt: torch.optim.Optimizer,
                 sched: torch.optim.lr_scheduler.LRScheduler, steps: int, gen: torch.Generator, device: str,
                 use_cl: bool, desc: str) -> tuple[float, float]:
    """One epoch of ``steps`` SGD steps on augmented batches; (mean loss, accuracy %). A diverging run is a
    one-line error."""
    model.train()
    total_loss, correct, seen = 0.0, 0, 0
    bar = tqdm(batches(split, cfg.batch_size, shuffle=True, augment_data=True, gen=gen, drop_last=True),
               total=steps, desc=desc, leave=False, dynamic_ncols=True, mininterval=2.0)
    for i, (x, y) in enumerate(bar):
        if i >= steps:
            break
        x, y = x.to(device), y.to(device)
        if use_cl:
            x = x.contiguous(memory_format=torch.channels_last)
        try:
            with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=cfg.amp):
                logits = model(x)
                loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
            if not math.isfinite(loss.item()):
                raise TrisegError(f"training diverged (loss {loss.item()}) in {desc}: lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        except RuntimeError as exc:  # quantization observers fail once exploding weights leave their range
            raise TrisegError(f"training failed in {desc} ({' '.join(str(exc).split())[:100]}): it probably "
                              f"diverged; lower the learning rate") from None
        sched.step()
        total_loss += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        if i % 20 == 0:
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{100 * correct / seen:.1f}", refresh=False)
    return total_loss / seen, 100 * correct / seen


def _data_identity(data: Cifar10) -> dict[str, object]:
    """What a checkpoint records of its data: where it came from and the split sizes."""
    return {"source": os.path.abspath(data.source), "train": len(data.train), "val": len(data.val)}


def qat_epoch_hook(epochs: int, freeze_bn_epoch: int | None, freeze_observer_epoch: int | None) -> EpochHook:
    """Freeze BN statistics and observers for the last epochs, as torchvision's QAT recipe does."""
    bn_at = freeze_bn_epoch if freeze_bn_epoch is not None else max(1, epochs // 2)
    obs_at = freeze_observer_epoch if freeze_observer_epoch is not None else max(1, (7 * epochs) // 10)

    def hook(model: nn.Module, epoch: int) -> None:
        if epoch >= bn_at:
            quant.freeze_bn_stats(model)
        if epoch >= obs_at:
            quant.freeze_observers(model)

    return hook
