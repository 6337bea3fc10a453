"""Float training (the original ``main.py``) and LSQ QAT (``q_main.py``): one SGD + cosine loop with a
checkpoint every epoch, ``--resume``, TensorBoard scalars and a tqdm bar."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from triseg import data as tdata
from triseg.approx.losses import kd_loss
from triseg.artifacts import atomic_save, load_checkpoint, resume_from, write_json
from triseg.errors import TrisegError
from triseg.lsq.models import build_model
from triseg.lsq.qat import QuantNet, to_qat
from triseg.lsq.quantizer import LsqQuantizer, keep_steps_positive
from triseg.paths import check_output_dir, check_output_file
from triseg.runlog import resolve_device, tensorboard_writer

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

    from triseg.jobs import LsqDataOptions, LsqQatConfig, LsqTrainConfig, LsqTrainingOptions

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass
class DataSource:
    """Training batches per epoch, evaluation batches per split, and what the model must fit."""

    train: Callable[[int], Batches]
    evaluate: Callable[[str], Batches]
    train_steps: int
    num_classes: int
    small_input: bool
    sizes: dict[str, int]


def cifar_source(data_dir: str | None, val_size: int | None, batch_size: int, seed: int,
                 train_limit: int | None = None, eval_limit: int | None = None) -> DataSource:
    """CIFAR-10 through :mod:`triseg.data` (stratified validation split carved from train)."""
    d = tdata.load_cifar10(data_dir, val_size=0)
    n_val = min(5000, len(d.train) // 10) if val_size is None else val_size
    if not 0 < n_val < len(d.train):
        raise TrisegError(f"--val-size {n_val} must be in (0, {len(d.train)})")
    val_idx, train_idx = tdata.stratified_split(d.train.y, n_val)
    splits = {
        "train": tdata.Split(d.train.x[train_idx], d.train.y[train_idx]).take(train_limit),
        "val": tdata.Split(d.train.x[val_idx], d.train.y[val_idx]).take(eval_limit),
        "test": d.test.take(eval_limit),
    }

    def train(epoch: int) -> Batches:
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        return tdata.batches(splits["train"], batch_size, shuffle=True, augment_data=True, gen=gen)

    def evaluate(split: str) -> Batches:
        return tdata.batches(splits[split], 256)

    return DataSource(train, evaluate, tdata.num_batches(splits["train"], batch_size), len(d.classes), True,
                      {k: len(v) for k, v in splits.items()})


def imagenet_source(data_dir: str | None, batch_size: int, workers: int, seed: int) -> DataSource:
    """An ImageNet-style ImageFolder tree with ``train/`` and ``val/`` (``val`` also serves as test)."""
    from torchvision import datasets, transforms

    root = Path(data_dir or os.environ.get(tdata.DATA_ENV, ""))
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise TrisegError(f"--dataset imagenet needs --data-dir with train/ and val/ ImageFolder trees, got {root}")
    norm = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train_set = datasets.ImageFolder(root / "train", transforms.Compose([
        transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]))
    val_set = datasets.ImageFolder(root / "val", transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]))

    def train(epoch: int) -> Batches:
        gen = torch.Generator().manual_seed(seed * 100003 + epoch)
        return torch.utils.data.DataLoader(train_set, batch_size, shuffle=True, num_workers=workers, generator=gen,
                                           drop_last=True)

    def evaluate(split: str) -> Batches:
        return torch.utils.data.DataLoader(val_set, batch_size, num_workers=workers)

    return DataSource(train, evaluate, len(train_set) // batch_size, len(train_set.classes), False,
                      {"train": len(train_set), "val": len(val_set), "test": len(val_set)})


def make_source(cfg: LsqDataOptions, batch_size: int, seed: int = 0, train_limit: int | None = None) -> DataSource:
    """The data named by ``--dataset`` / ``--data-dir``, in batches of ``batch_size``."""
    if cfg.dataset == "imagenet":
        return imagenet_source(cfg.data_dir, batch_size, cfg.loader_workers, seed)
    return cifar_source(cfg.data_dir, cfg.val_size, batch_size, seed, train_limit, cfg.eval_limit)


def pick_device(device: str, cuda: int | None = None) -> torch.device:
    """``--device`` refined by ``--cuda N``: GPU N, or the CPU for -1 (the configs refuse conflicts)."""
    if cuda is None:
        return torch.device(resolve_device(device))
    if cuda < 0:
        return torch.device("cpu")
    if not torch.cuda.is_available() or cuda >= torch.cuda.device_count():
        raise TrisegError(f"--cuda {cuda}: no such CUDA device here (use --cuda -1 for the CPU)")
    return torch.device(f"cuda:{cuda}")


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, device: torch.device) -> tuple[float, float]:
    """Top-1 accuracy (%) and mean cross-entropy."""
    model.eval()
    correct = total = 0
    loss = 0.0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model(x).float()
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(1) == y).sum().item()
        total += len(y)
    return 100.0 * correct / max(total, 1), loss / max(total, 1)


def _purge_from(writer: SummaryWriter, step: int) -> None:
    """Hide in TensorBoard the events of an earlier run of this log dir at ``step`` and later.

    What ``SummaryWriter(purge_step=step)`` writes: a ``SessionLog.START`` event at ``step``.
    """
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    writer.file_writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))


def load_lsq_checkpoint(path: str | Path) -> dict:
    """A checkpoint written by lsq-train or lsq-qat; a one-line error when it is missing or foreign."""
    path = Path(path)
    if not path.is_file():
        raise TrisegError(f"checkpoint {path} not found")
    remedy = "pass one written by lsq-train or lsq-qat (a run's own damaged checkpoint: delete it and train again)"
    ckpt = load_checkpoint(path, "LSQ checkpoint", weights_only=True, remedy=remedy)
    if ckpt.get("kind") not in ("float", "qat") or not isinstance(ckpt.get("meta"), dict):
        raise TrisegError(f"{path} is not an LSQ checkpoint from lsq-train or lsq-qat")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """The float or QAT network stored in ``ckpt``."""
    meta = ckpt["meta"]
    try:
        net = build_model(meta["model"], meta["num_classes"], meta["small_input"])
        if ckpt["kind"] == "qat":
            net = to_qat(net, meta["w_bits"], meta["a_bits"], meta["first_last_bits"],
                         bool(meta.get("per_channel_weights", False)), bool(meta.get("keep_bn", False)),
                         meta.get("residual_bits"), meta.get("weight_step_init", "lsq"),
                         meta.get("act_step_init", "lsq"))
        net.load_state_dict(ckpt["model"])
    except TrisegError:
        raise
    except Exception as exc:  # a foreign or edited checkpoint fails in many ways
        raise TrisegError(f"the {ckpt['kind']} checkpoint does not hold a model this version builds "
                          f"({type(exc).__name__}: {' '.join(str(exc).split())[:120]})") from None
    return net


RESUME_FREE = ("resume", "resume_or_start", "workers", "loader_workers", "log_dir", "device", "cuda", "output_dir",
               "eval_limit", "float_checkpoint", "init_checkpoint", "epochs", "amp")


def _check_same_settings(ckpt: dict, cfg: LsqTrainingOptions, path: Path) -> None:
    """A resumed run must use the settings its checkpoint was made with (all but the folders, threads,
    device, mixed precision and the number of epochs)."""
    made = ckpt.get("config")
    if not isinstance(made, dict):
        return
    now = cfg.to_dict()
    changed = [k for k in now if k in made and k not in RESUME_FREE and made[k] != now[k]]
    if changed:
        k = changed[0]
        raise TrisegError(f"{path} was made with --{k.replace('_', '-')} {made[k]}, not {now[k]}: pass the same "
                          f"options to resume, or choose another --output-dir")


def check_outputs(cfg: LsqTrainingOptions, files: tuple[str, ...]) -> None:
    """Before any work: the run's files and TensorBoard folder can be written, and --resume has a checkpoint."""
    out = Path(cfg.output_dir)
    for name in files:
        check_output_file(out / name)
    check_output_dir(Path(cfg.log_dir) / out.name)
    ckpt = out / "checkpoint.pt"
    if not resume_from(ckpt, cfg.resume, cfg.resume_or_start) and ckpt.exists():
        raise TrisegError(f"{ckpt} exists: pass --resume to continue it, or choose another --output-dir")


def _progress(batches: Batches, total: int, desc: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return iter(tqdm(batches, total=total, desc=desc, leave=False, mininterval=5, dynamic_ncols=True))


@dataclass
class Distillation:
    """Knowledge distillation from a float teacher: ``(1 - weight) CE + weight KD(T)`` (the LSQ paper's recipe)."""

    teacher: nn.Module
    T: float
    weight: float

    def loss(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mixed loss of the student's ``logits`` on the batch ``x`` with labels ``y``."""
        with torch.no_grad():
            target = self.teacher(x).float()
        return (1 - self.weight) * F.cross_entropy(logits, y) + self.weight * kd_loss(logits, target, self.T)


def fit(model: nn.Module, source: DataSource, cfg: LsqTrainingOptions, lr: float, kind: str, meta: dict,
        param_groups: list[dict], amp: bool = False, distill: Distillation | None = None,
        label_smoothing: float = 0.0) -> dict:
    """Train for ``cfg.epochs`` epochs (continuing a checkpoint with ``--resume``), with the cross-entropy (smoothed
    by ``label_smoothing``) or ``distill``'s loss; test-set metrics."""
    device = pick_device(cfg.device, cfg.cuda)
    model.to(device)
    if distill is not None:
        distill.teacher.to(device).eval().requires_grad_(False)
    out = Path(cfg.output_dir)
    ckpt_path = out / "checkpoint.pt"
    epochs = cfg.epochs
    if epochs is None:  # the config refuses this; a field set after construction is not checked
        raise TrisegError("--epochs is required")
    opt = torch.optim.SGD(param_groups, lr=lr, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs * source.train_steps))
    scaler = torch.amp.GradScaler(device.type, enabled=amp and device.type == "cuda")
    start, history = 0, []
    if resume_from(ckpt_path, cfg.resume, cfg.resume_or_start):
        ckpt = load_lsq_checkpoint(ckpt_path)
        if ckpt["kind"] != kind:
            raise TrisegError(f"{ckpt_path} is a {ckpt['kind']} checkpoint, not {kind}: choose another --output-dir")
        _check_same_settings(ckpt, cfg, ckpt_path)
        try:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            sched.load_state_dict(ckpt["scheduler"])
            start, history = int(ckpt["epoch"]), list(ckpt["history"])
        except Exception as exc:  # another model or optimiser fails in many ways
            raise TrisegError(f"{ckpt_path} was made with other settings ({type(exc).__name__}): drop --resume "
                              f"and choose another --output-dir") from None
    elif ckpt_path.exists():
        raise TrisegError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --output-dir")
    # steps are epochs: 1..start are in the checkpoint, start+1.. are redone
    writer = tensorboard_writer(Path(cfg.log_dir) / out.name, on_open=lambda w: _purge_from(w, start + 1))
    for epoch in range(start, epochs):
        model.train()
        t0, seen, correct, loss_sum = time.time(), 0, 0, 0.0
        bar = _progress(source.train(epoch), source.train_steps, f"{kind} epoch {epoch + 1}/{epochs}")
        for x, y in bar:
            x, y = x.to(device), y.to(device)
            with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                                enabled=amp):
                logits = model(x)
                loss = (distill.loss(logits.float(), x, y) if distill
                        else F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing))
            if not math.isfinite(loss.item()):
                raise TrisegError(f"training diverged (loss {loss.item()}) in epoch {epoch + 1}: lower --lr or "
                                  f"--weight-decay")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            keep_steps_positive(model)
            sched.step()
            seen += len(y)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
        val_acc, val_loss = evaluate(model, source.evaluate("val"), device)
        if not math.isfinite(val_loss):
            raise TrisegError(f"training diverged (validation loss {val_loss}) in epoch {epoch + 1}: lower --lr or "
                              f"--weight-decay")
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": 100.0 * correct / max(seen, 1),
               "val_loss": val_loss, "val_acc": val_acc, "lr": opt.param_groups[0]["lr"],
               "seconds": time.time() - t0}
        history.append(row)
        for key in ("train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"):
            writer.add_scalar(f"{kind}/{key}", row[key], epoch + 1)
        writer.flush()
        atomic_save({"kind": kind, "meta": meta, "model": model.state_dict(), "optimizer": opt.state_dict(),
                     "scheduler": sched.state_dict(), "epoch": epoch + 1, "history": history,
                     "config": cfg.to_dict()}, ckpt_path)
        tqdm.write(f"{kind} epoch {epoch + 1}: train {row['train_acc']:.2f}% val {val_acc:.2f}% "
                   f"({row['seconds']:.0f}s)")
    writer.close()
    test_acc, test_loss = evaluate(model, source.evaluate("test"), device)
    metrics = {"kind": kind, **meta, "epochs": epochs, "test_acc": test_acc, "test_loss": test_loss,
               "sizes": source.sizes, "history": history}
    write_json(metrics, out / "metrics.json")
    print(f"{kind}: test top-1 {test_acc:.2f}% after {epochs} epochs -> {out}")
    return metrics


def train_float(cfg: LsqTrainConfig) -> dict:
    """``lsq-train``: train a float model from scratch."""
    check_outputs(cfg, ("checkpoint.pt", "metrics.json"))
    torch.manual_seed(cfg.seed)
    source = make_source(cfg, cfg.batch_size, cfg.seed, cfg.train_limit)
    net = build_model(cfg.model, source.num_classes, source.small_input)
    meta = {"model": cfg.model, "num_classes": source.num_classes, "small_input": source.small_input}
    decay = [p for n, p in net.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return fit(net, source, cfg, cfg.lr, "float", meta, groups, amp=cfg.amp, label_smoothing=cfg.label_smoothing)


def calibrate(net: QuantNet, source: DataSource) -> None:
    """Initialise every activation step from one training batch, in eval mode (BN, when kept, uses and
    keeps its running statistics)."""
    x, _ = next(iter(source.train(-1)))
    net.eval()
    with torch.no_grad():
        net(x)


def init_from_qat(net: QuantNet, ckpt: dict, path: str | Path) -> None:
    """Progressive quantization: ``net`` takes the weights, biases and BN of the QAT checkpoint ``ckpt`` (the
    same network and BN treatment); a quantizer keeps the checkpoint's step when its width and step shape
    are the same, else it starts afresh (weight steps from the copied weights, activation steps at
    calibration)."""
    made = ckpt["meta"]
    if bool(made.get("keep_bn", False)) != net.meta["keep_bn"]:
        raise TrisegError(f"{path} was trained with --keep-bn {bool(made.get('keep_bn', False))}: pass the same "
                          f"--keep-bn to start from it")
    src = model_from_checkpoint(ckpt)
    old = dict(src.named_modules())
    with torch.no_grad():
        for name, layer in net.layers.items():
            layer.load_state_dict({k: v for k, v in src.layers[name].state_dict().items()
                                   if not k.startswith(("wq.", "in_q."))}, strict=False)
        for name, q in net.named_modules():
            if not isinstance(q, LsqQuantizer):
                continue
            before = old.get(name)
            if isinstance(before, LsqQuantizer) and before.bits == q.bits and before.step.shape == q.step.shape:
                q.step.copy_(before.step)
                q.initialized.copy_(before.initialized)
            elif name.endswith(".wq"):
                q.init_step(net.layers[name.split(".")[1]].weight)
            else:
                q.initialized.fill_(False)


def _network(meta: dict) -> str:
    """What a checkpoint's network must match to stand in for another: name, classes and input stem."""
    return f"{meta['model']} ({meta['num_classes']} classes, {'CIFAR' if meta['small_input'] else 'ImageNet'} stem)"


def load_teacher(cfg: LsqQatConfig, meta: dict) -> Distillation | None:
    """``--teacher``: a float checkpoint of the QAT run's network and classes, or None without one."""
    if cfg.teacher is None:
        return None
    ckpt = load_lsq_checkpoint(cfg.teacher)
    if ckpt["kind"] != "float":
        raise TrisegError(f"--teacher {cfg.teacher} is a QAT checkpoint; distillation needs a float one (lsq-train's)")
    if _network(ckpt["meta"]) != _network(meta):
        raise TrisegError(f"--teacher {cfg.teacher} holds {_network(ckpt['meta'])}; the QAT run trains "
                          f"{_network(meta)}")
    return Distillation(model_from_checkpoint(ckpt), cfg.kd_T, cfg.kd_weight)


def _check_model(cfg: LsqQatConfig, path: str | Path, meta: dict) -> None:
    """A given ``--model`` must be the checkpoint's."""
    if cfg.model is not None and cfg.model != meta["model"]:
        raise TrisegError(f"{path} holds {meta['model']}, not --model {cfg.model}")


def train_qat(cfg: LsqQatConfig) -> dict:
    """``lsq-qat``: LSQ fine-tuning of a float checkpoint, then the integer export."""
    from triseg.lsq.integer import export_integer

    check_outputs(cfg, ("checkpoint.pt", "metrics.json", "int_model.pt"))
    path = Path(cfg.output_dir) / "checkpoint.pt"
    resuming = resume_from(path, cfg.resume, cfg.resume_or_start)
    start = cfg.float_checkpoint or cfg.init_checkpoint
    if cfg.float_checkpoint and cfg.init_checkpoint:
        raise TrisegError("give one of --float-checkpoint and --init-checkpoint (the QAT run starts from one model)")
    if cfg.resume and not cfg.resume_or_start and start:
        flag = "--float-checkpoint" if cfg.float_checkpoint else "--init-checkpoint"
        raise TrisegError(f"{flag} is not used with --resume (the run continues from its checkpoint)")
    if not resuming and not start:
        raise TrisegError("lsq-qat needs --float-checkpoint (a checkpoint.pt from lsq-train), --init-checkpoint "
                          "(one from lsq-qat) or --resume")
    torch.manual_seed(cfg.seed)
    source = make_source(cfg, cfg.batch_size, cfg.seed, cfg.train_limit)
    if resuming:
        ckpt = load_lsq_checkpoint(path)
        if ckpt["kind"] != "qat":
            raise TrisegError(f"{path} is not a QAT checkpoint")
        meta = ckpt["meta"]
        _check_model(cfg, path, meta)
        net = model_from_checkpoint(ckpt)
    else:
        assert start is not None
        ckpt = load_lsq_checkpoint(start)
        if cfg.float_checkpoint and ckpt["kind"] != "float":
            raise TrisegError(f"{start} is a QAT checkpoint; --float-checkpoint needs lsq-train's (or pass it as "
                              f"--init-checkpoint)")
        if cfg.init_checkpoint and ckpt["kind"] != "qat":
            raise TrisegError(f"{start} is a float checkpoint; --init-checkpoint needs lsq-qat's")
        _check_model(cfg, start, ckpt["meta"])
        if ckpt["meta"]["num_classes"] != source.num_classes:
            raise TrisegError(f"{start} has {ckpt['meta']['num_classes']} classes, the data has {source.num_classes}")
        m = ckpt["meta"]
        base = model_from_checkpoint(ckpt) if cfg.float_checkpoint else build_model(m["model"], m["num_classes"],
                                                                                     m["small_input"])
        net = to_qat(base, cfg.w_num_bits, cfg.a_num_bits, cfg.first_last_bits, cfg.per_channel_weights, cfg.keep_bn,
                     cfg.residual_bits, cfg.weight_step_init, cfg.act_step_init)
        if cfg.init_checkpoint:
            init_from_qat(net, ckpt, start)
        calibrate(net, source)
        meta = dict(net.meta)
    distill = load_teacher(cfg, meta)
    metrics = fit(net, source, cfg, cfg.lr, "qat", meta, net.param_groups(cfg.weight_decay), distill=distill)
    net.cpu().eval()
    x, _ = next(iter(source.evaluate("test")))
    export_integer(net, tuple(x.shape[1:]), Path(cfg.output_dir) / "int_model.pt")
    return metrics
