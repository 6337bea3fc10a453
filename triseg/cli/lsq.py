"""LSQ modes: lsq-train (float), lsq-qat (LSQ QAT and the integer export), lsq-infer (integer-only inference)."""

from __future__ import annotations

from triseg.cli.modes import Mode
from triseg.jobs import LsqInferConfig, LsqQatConfig, LsqTrainConfig
from triseg.runlog import set_threads


def lsq_train(cfg: LsqTrainConfig) -> None:
    """Float training -> <output-dir>/checkpoint.pt and metrics.json."""
    from triseg.lsq.train import train_float

    set_threads(cfg.workers)
    train_float(cfg)


def lsq_qat(cfg: LsqQatConfig) -> None:
    """LSQ QAT of an lsq-train checkpoint -> <output-dir>/checkpoint.pt, metrics.json and int_model.pt."""
    from triseg.lsq.train import train_qat

    set_threads(cfg.workers)
    train_qat(cfg)


def lsq_infer(cfg: LsqInferConfig) -> None:
    """Integer-only accuracy, and its agreement with the fake-quant model of a QAT checkpoint."""
    from triseg.lsq.infer import run_infer

    set_threads(cfg.workers)
    run_infer(cfg)


MODES = [
    Mode("lsq-train", "train a float model for LSQ (resnet18/34, resnet_cifar10, tiny_vgg); SGD + cosine LR, "
         "TensorBoard under --log-dir (default logs/)", LsqTrainConfig, lsq_train),
    Mode("lsq-qat", "LSQ quantization-aware training from an lsq-train checkpoint (BN folded, learned steps); "
         "exports int_model.pt; TensorBoard under --log-dir (default qat_logs/)", LsqQatConfig, lsq_qat),
    Mode("lsq-infer", "integer-only inference, checked against the fake-quant model", LsqInferConfig, lsq_infer),
]
