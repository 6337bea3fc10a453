"""One typed settings dataclass per job. The CLI generates its options from these; the API takes them.

Small option groups (model and folders, data, seed, batch size, backend, ...) are mixed into each
job's dataclass, so a mode offers exactly the options it uses and every option has one definition:
its default, help and legal range.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from triseg.approx.calibrate import TMAX_MARGIN, TMAX_PERCENTILE
from triseg.approx.config import config_path as spelled_path
from triseg.options import (NON_NEGATIVE, POSITIVE, Options, above, at_least, below, between, input_file,
                            input_folder, input_path, only_with, option, output_file, output_folder,
                            output_name, plain_file_name, threads)
from triseg.quant import BACKENDS
from triseg.errors import TrisegError
from triseg.search.base import OBJECTIVES
from triseg.search.ladder import LadderConfig
from triseg.search.optuna_search import OptunaConfig
from triseg.search.ppo import PPOConfig
from triseg.search.supervised import SupervisedConfig
from triseg.search.warm import WarmConfig
from triseg.train import SCHEDULES

SPLITS = ("train", "val", "test")


def _model_names() -> list[str]:
    from triseg.models import MODELS

    return list(MODELS)


def _strategy_names() -> list[str]:
    from triseg.search.registry import STRATEGIES

    return list(STRATEGIES)


@dataclass
class ModelOptions(Options):
    """Which model, where its files live, how many CPU threads."""

    model: str = option("vgg16", "model name (see `triseg models`)", choices=_model_names)
    output_dir: str = option("outputs", "where model files and results go", check=output_folder())
    workers: int | None = option(None, "CPU threads for tensor math (default: all cores)", check=threads())


@dataclass
class DataOptions(Options):
    """Where CIFAR-10 is and how much of train becomes the validation split."""

    data_dir: str | None = option(None, "CIFAR-10: cifar-10-batches-py folder, ImageFolder tree or .tar(.gz) of "
                                        "one; default $TRISEG_DATA_DIR, else the tiny sample shipped with triseg",
                                 check=input_path(unless="download"))
    download: bool = option(False, "download CIFAR-10 into --data-dir when missing")
    val_size: int | None = option(None, "validation images carved from train (default 5000, or 10% of a smaller "
                                        "train split)", check=POSITIVE)


@dataclass
class SeedOptions(Options):
    """The random seed."""

    seed: int = option(0, "random seed", check=NON_NEGATIVE)


@dataclass
class BatchOptions(Options):
    """Images per batch."""

    batch_size: int = option(128, "batch size", check=POSITIVE)


@dataclass
class BackendOptions(Options):
    """The quantized backend a model is made for, and the kernels it runs on."""

    backend: str | None = option(None, "quantized backend (default fbgemm; a model file's own backend wins)",
                                 choices=BACKENDS)
    engine: str | None = option(None, "INT8 kernels (default x86 for fbgemm/x86 models, else qnnpack)",
                                choices=BACKENDS)


@dataclass
class DeviceOptions(Options):
    """Where training and searching run."""

    device: str = option("auto", "auto, cpu or cuda (INT8 kernels always run on the CPU)",
                         choices=("auto", "cpu", "cuda"))


@dataclass
class ResumeOptions(Options):
    """Continuing an interrupted run."""

    resume: bool = option(False, "continue an interrupted run from its checkpoint (an error when there is none)")


@dataclass
class CostOptions(Options):
    """The energy table of the hardware cost estimate."""

    cost_table: str | None = option(None, "JSON file overriding the per-operation energies (pJ) of the estimate",
                                    check=input_file())


@dataclass
class SpaceOptions(Options):
    """Calibration: the histograms and the tmax rule of every search."""

    calib_batches: int = option(16, "training batches for the histograms", check=POSITIVE)
    tmax_percentile: float = option(TMAX_PERCENTILE, "tmax = this percentile of the non-zero codes + --tmax-margin",
                                    check=between(0, 100, low_open=True))
    tmax_margin: int = option(TMAX_MARGIN, "added to the percentile for tmax", check=between(-255, 255))
    dynamic_tmax: bool = option(False, "search tmax per layer in [10, the backend's top code] (random, tpe, cmaes, "
                                       "greedy, ladder, ppo, ppo-warm); the rule's tmax is then only the starting "
                                       "point")


@dataclass
class ModelsConfig(Options):
    """``models``: no options."""


@dataclass
class TrainFloatConfig(ModelOptions, DataOptions, SeedOptions, BatchOptions, DeviceOptions, ResumeOptions):
    """``train_float``: float training."""

    epochs: int = option(30, "training epochs", check=POSITIVE)
    lr: float = option(0.05, "peak learning rate of the schedule", check=above(0))
    schedule: str = option("onecycle", "learning-rate schedule", choices=tuple(SCHEDULES))
    weight_decay: float = option(5e-4, "SGD weight decay", check=at_least(0))
    max_train_batches: int | None = option(None, "cap batches per epoch (smoke runs)", check=POSITIVE)
    resume_or_start: bool = option(False, "continue from the checkpoint if there is one, else start from scratch")
    amp: bool = option(False, "mixed precision: bfloat16 autocast, the weights stay float32 (faster on GPUs and on "
                              "CPUs with AMX or AVX512-BF16, slower elsewhere); may change when a run is resumed")


@dataclass
class TrainQATConfig(ModelOptions, DataOptions, SeedOptions, BatchOptions, DeviceOptions, ResumeOptions):
    """``train_qat``: quantization-aware fine-tuning of the float model."""

    backend: str | None = option(None, "quantized backend (default fbgemm)", choices=BACKENDS)
    qat_epochs: int = option(10, "QAT fine-tuning epochs", check=POSITIVE)
    qat_lr: float = option(0.001, "QAT peak learning rate", check=above(0))
    freeze_bn_epoch: int | None = option(None, "epoch (0-based) from which BN statistics are frozen "
                                               "(default half of --qat-epochs)",
                                         check=below("qat_epochs", NON_NEGATIVE))
    freeze_observer_epoch: int | None = option(None, "epoch (0-based) from which observers are frozen "
                                                     "(default 70% of --qat-epochs)",
                                               check=below("qat_epochs", NON_NEGATIVE))
    max_train_batches: int | None = option(None, "cap batches per epoch (smoke runs)", check=POSITIVE)
    resume_or_start: bool = option(False, "continue from the checkpoint if there is one, else start from scratch")


@dataclass
class ExportInt8Config(ModelOptions):
    """``export_int8``: convert the QAT model."""

    backend: str | None = option(None, "must match the QAT model's backend when given", choices=BACKENDS)


@dataclass
class EvalInt8Config(ModelOptions, DataOptions, BatchOptions, BackendOptions):
    """``eval_int8``: INT8 test accuracy and agreement with the QAT model."""

    cli_hidden = ("val_size",)


@dataclass
class StudentOptions(ModelOptions, DataOptions, SeedOptions, BackendOptions, DeviceOptions, CostOptions):
    """What every mode that runs the INT8 student needs."""


@dataclass
class SearchConfig(StudentOptions, BatchOptions, ResumeOptions):
    """``search`` / ``train_ppo_triseg``: one search job (calibrate, search, select on val, test once)."""

    batch_size: int = option(32, "images per episode batch", check=POSITIVE)
    episode_images: int = option(0, "score every episode on one fixed slice of N training images (0: episodes "
                                    "cycle over training batches of --batch-size)", check=NON_NEGATIVE)
    search: str = option("ppo", "search strategy", choices=_strategy_names)
    episodes: int = option(500, "student evaluations (the budget)", check=POSITIVE)
    result_file: str = option("result.json", "name of the result JSON under <output-dir>/tri_ppo_int_codes/",
                              check=output_name("output_dir", "tri_ppo_int_codes"))
    max_acc_drop: float = option(2.0, "accuracy drop limit in points", check=between(0, 100))
    kd_T: float = option(2.0, "KD temperature", check=between(0, 1000, low_open=True))
    attention_weight: float = option(100.0, "weight of the attention-transfer term", check=between(0, 1e6))
    objective: str = option("reward", "reward: the original (closest student wins); savings: fewest multiplies "
                                      "within the drop limit", choices=OBJECTIVES)
    savings_weight: float = option(1.0, "savings: weight of the distillation loss against multiplies left in the "
                                        "episode reward",
                                   check=only_with("objective", "savings", check=between(0, 1e6)))
    safety_margin: float = option(1.0, "savings: the chosen config's validation drop must stay within "
                                       "--max-acc-drop minus this margin",
                                  check=only_with("objective", "savings", check=between(0, 100)))
    margin_risk: float | None = option(None, "savings: choose the safety margin on validation instead: the smallest "
                                             "of 0, 0.25, 0.5, 0.75, 1, 1.5 with which selecting on random halves "
                                             "of the validation split exceeds the limit on the other half in at most "
                                             "this share of the splits (e.g. 0.05)",
                                       check=only_with("objective", "savings", check=between(0, 1)))
    race: bool = option(False, "savings: race the Pareto candidates on growing slices of validation (500 images, "
                               "doubling); one leaves when its drop exceeds --max-acc-drop minus the margin, or its "
                               "multiplies the best whole-split candidate's, by 4 standard errors; the pick comes "
                               "from the whole split, the front keeps only the candidates that reached it (default: "
                               "every candidate on the whole split, the whole front)",
                        check=only_with("objective", "savings"))
    top_k: int = option(30, "configs kept for the validation pass (savings: points of the Pareto front)",
                        check=POSITIVE)
    score_batch: int = option(16, "most configs scored in one forward pass, for strategies that propose several "
                                  "before learning from any (ppo, ppo-warm, random, greedy; tpe and cmaes with "
                                  "--optuna-batch); fewer when an activation of the pass would exceed 4 MiB; the "
                                  "same search as 1 (one at a time)", check=between(1, 4096))
    eval_every: int = option(100, "log codes every N episodes", check=POSITIVE)
    checkpoint_every: int = option(100, "checkpoint every N episodes", check=POSITIVE)
    stop_after: int | None = option(None, "stop (resumably) after N episodes", check=POSITIVE)
    no_test: bool = option(False, "select on validation and never open the test split (run final_test later)")
    resume_or_start: bool = option(False, "continue from the checkpoint if there is one, else start from scratch")
    space: SpaceOptions = option(help="calibration", default_factory=SpaceOptions)
    ppo: PPOConfig = option(help="PPO (ppo, ppo-warm)", default_factory=PPOConfig,
                            check=only_with("search", "ppo", "ppo-warm"))
    warm: WarmConfig = option(help="warm start (ppo-warm)", default_factory=WarmConfig,
                              check=only_with("search", "ppo-warm"))
    ladder: LadderConfig = option(help="tmax ladder (ladder)", default_factory=LadderConfig,
                                  check=only_with("search", "ladder"))
    optuna: OptunaConfig = option(help="optuna (tpe, cmaes)", default_factory=OptunaConfig,
                                  check=only_with("search", "tpe", "cmaes"))

    def check(self) -> None:
        super().check()
        if self.search == "ladder" and (self.objective != "savings" or not self.space.dynamic_tmax):
            raise TrisegError("--search ladder climbs tmax for savings: pass --objective savings --dynamic-tmax")


@dataclass
class SupervisedJobConfig(StudentOptions, BatchOptions):
    """``train_supervised_triseg``: the gradient-based method, selected and tested like a search."""

    result_file: str = option("supervised.json", "name of the result JSON under <output-dir>/tri_ppo_int_codes/",
                              check=output_name("output_dir", "tri_ppo_int_codes"))
    max_acc_drop: float = option(2.0, "accuracy drop limit in points", check=between(0, 100))
    kd_T: float = option(2.0, "KD temperature", check=between(0, 1000, low_open=True))
    no_test: bool = option(False, "select on validation and never open the test split (run final_test later)")
    space: SpaceOptions = option(help="calibration", default_factory=SpaceOptions)
    supervised: SupervisedConfig = option(help="gradient descent on the maps", default_factory=SupervisedConfig)


@dataclass
class ConfigPathOptions(Options):
    """A search's result JSON."""

    config_path: str = option("", "result JSON of a search (Windows paths accepted)",
                              check=input_file(convert=spelled_path, required=True))
    allow_other_teacher: bool = option(False, "run even when the INT8 model differs from the teacher the result "
                                              "was searched on (the output says so)")


@dataclass
class EvalConfig(StudentOptions, BatchOptions, ConfigPathOptions):
    """``eval_ppo_int8``: test accuracy of a config and its per-layer coverage."""

    cli_hidden = ("seed", "val_size")
    batch_size: int = option(256, "batch size", check=POSITIVE)


@dataclass
class FinalTestConfig(StudentOptions, BatchOptions, ConfigPathOptions):
    """``final_test``: evaluate a result selected on validation once on the test split, in place."""

    cli_hidden = ("seed", "val_size")
    batch_size: int = option(256, "batch size", check=POSITIVE)


@dataclass
class ParetoConfig(ConfigPathOptions):
    """``pareto``: print a savings result's Pareto front, or write one of its points as a result."""

    cli_hidden = ("allow_other_teacher",)

    pick: int | None = option(None, "write point N of the front (0 = fewest multiplies) as a result beside the "
                                    "original, selected on validation and not yet tested", check=NON_NEGATIVE)
    output: str | None = option(None, "file name of the picked point (default <stem>.pareto<N>.json)",
                                check=plain_file_name)


@dataclass
class ZooAddConfig(ModelOptions):
    """``zoo_add``: copy a model's stages into the zoo."""

    cli_hidden = ("workers",)
    output_dir: str = option("outputs", "where the model files and their eval_int8 JSON are read from",
                             check=input_folder())
    zoo_dir: str = option("", "zoo folder (default: zoo/ in the repository)", check=output_folder(required=False))
    command: list[str] = option(help="a command that produced the files (repeatable)", default_factory=list)
    half_qat: bool = option(False, "store the QAT model's conv and linear weights in float16 (half the bytes; "
                                   "loading upcasts them to float32; the INT8 file is copied as it is)")
    without_float: bool = option(False, "leave the float stage out of the zoo (the manifest says how to rebuild it)")
    without_qat: bool = option(False, "ship only the INT8 model (enough to search): the float and QAT stages are "
                                      "left out, the manifest says how to rebuild them")

    def check(self) -> None:
        """The field checks, then: --half-qat needs the QAT stage shipped."""
        super().check()
        if self.half_qat and self.without_qat:
            raise TrisegError("--half-qat and --without-qat conflict: the QAT stage is either halved or left out")


@dataclass
class LsqZooAddConfig(Options):
    """``lsq-zoo-add``: ship a finished ``lsq-train`` or ``lsq-qat`` run in the LSQ zoo."""

    run_dir: str = option("", "the finished run's --output-dir (its checkpoint.pt and metrics.json; required)",
                          check=input_folder(required=True))
    name: str = option("", "the zoo file's name, without .pt (required)", check=plain_file_name)
    zoo_dir: str = option("", "LSQ zoo folder (default: zoo/lsq/ in the repository)",
                          check=output_folder(required=False))
    command: list[str] = option(help="a command that produced the run (repeatable)", default_factory=list)


@dataclass
class SampleOptions(ModelOptions, DataOptions, SeedOptions, BatchOptions, BackendOptions):
    """Modes that run seeded batches of one split."""

    split: str = option("val", "images to run; batches are drawn in the seeded shuffled order", choices=SPLITS)
    num_batches: int = option(1, "batches of --batch-size images (fewer if the split is small)", check=POSITIVE)


@dataclass
class DumpConfig(SampleOptions):
    """``dump_acts_float`` / ``dump_acts_int8``."""


@dataclass
class DumpFloatConfig(DumpConfig):
    """``dump_acts_float``: the float model has no backend or INT8 kernels."""

    cli_hidden = ("backend", "engine")


@dataclass
class VarianceConfig(SampleOptions):
    """``analyze_variance``."""

    num_batches: int = option(16, "batches of --batch-size images (fewer if the split is small)", check=POSITIVE)
    stage: str = option("int8", "model to analyse (int8: dequantized weights and activations)",
                        choices=("float", "int8"))
    backend: str | None = option(None, "--stage int8: the INT8 model's backend, checked against its file",
                                 choices=BACKENDS, check=only_with("stage", "int8"))
    engine: str | None = option(None, "--stage int8: INT8 kernels (default x86 for fbgemm/x86 models, else "
                                      "qnnpack)", choices=BACKENDS, check=only_with("stage", "int8"))


@dataclass
class PercentilesConfig(SampleOptions):
    """``collect_percentiles``: defaults match the search's calibration."""

    split: str = option("train", "images to run; batches are drawn in the seeded shuffled order", choices=SPLITS)
    batch_size: int = option(32, "batch size", check=POSITIVE)
    num_batches: int = option(16, "batches of --batch-size images (fewer if the split is small)", check=POSITIVE)


@dataclass
class SensitivityConfig(StudentOptions, BatchOptions, ConfigPathOptions):
    """``analyze_sensitivity``."""

    cli_hidden = ("seed", "cost_table")
    batch_size: int = option(256, "batch size", check=POSITIVE)
    split: str = option("val", "split to evaluate on (selection decisions must not use test)", choices=("val", "test"))
    max_images: int | None = option(None, "use only a class-stratified subset of N images of the split", check=POSITIVE)



@dataclass
class ReportConfig(SensitivityConfig):
    """``report``: one self-contained HTML page about a result."""

    cli_hidden = ("cost_table",)
    run_dir: str | None = option(None, "the search's --output-dir (its teacher, history JSON, checkpoints/); "
                                       "default: the folder above the config's tri_ppo_int_codes/",
                                 check=input_folder())
    hist_batches: int = option(8, "batches for the code histograms", check=POSITIVE)
    sensitivity_file: str | None = option(None, "reuse an analyze_sensitivity JSON instead of recomputing it",
                                          check=input_file())
    report_file: str | None = option(None, "HTML file name (default <config stem>.html)",
                                     check=output_name("output_dir", "reports"))


# LSQ: lsq-train, lsq-qat, lsq-infer ------------------------------------------------------------------------------

LSQ_DATASETS = ("cifar10", "imagenet")


def _lsq_model_names() -> list[str]:
    """The LSQ model registry's names (not the triseg models of ``--model`` elsewhere)."""
    from triseg.lsq.models import MODELS

    return list(MODELS)


def _step_inits() -> list[str]:
    """The LSQ step initialisation rules."""
    from triseg.lsq.quantizer import STEP_INITS

    return list(STEP_INITS)


def _lsq_bits(v: object) -> str | None:
    """A bit width the LSQ quantizer supports (2-8)."""
    from triseg.lsq.quantizer import bad_bits

    return bad_bits(v)


@dataclass
class LsqThreadOptions(Options):
    """CPU threads, spelled ``--workers`` as in every triseg mode (``--threads`` in the original LSQ tool)."""

    workers: int | None = option(None, "CPU threads for torch (default: torch's choice)", check=threads(),
                                 aliases=("--threads",))


@dataclass
class LsqDataOptions(Options):
    """Which dataset the LSQ modes read, how much of it, and how ImageNet is loaded."""

    dataset: str = option("cifar10", "cifar10 (any layout triseg reads) or imagenet (ImageFolder tree with train/ "
                                     "and val/)", choices=LSQ_DATASETS)
    data_dir: str | None = option(None, "dataset location; default $TRISEG_DATA_DIR, else the tiny CIFAR-10 "
                                        "sample shipped with triseg", check=input_path())
    val_size: int | None = option(None, "CIFAR-10 validation images carved from train (default 5000, or 10% of a "
                                        "smaller train split)", check=only_with("dataset", "cifar10", check=POSITIVE))
    eval_limit: int | None = option(None, "use only a class-stratified subset of N val/test images", check=POSITIVE)
    loader_workers: int = option(2, "ImageNet DataLoader worker processes (0: load in the main process)",
                                 check=only_with("dataset", "imagenet", check=threads(0)))


@dataclass
class LsqTrainingOptions(LsqThreadOptions, LsqDataOptions, SeedOptions, BatchOptions, DeviceOptions, ResumeOptions):
    """What ``lsq-train`` and ``lsq-qat`` share: the run folder, the epochs, the device and TensorBoard.

    ``--cuda N`` (the original spelling) picks GPU N for ``--device auto`` or ``cuda``; ``--cuda -1``
    means the CPU. ``--cuda N`` with ``--device cpu``, or ``--cuda -1`` with ``--device cuda``, is an error.
    """

    output_dir: str = option("", "checkpoint.pt and metrics.json go here (required)", check=output_folder(),
                             aliases=("--out-dir",))
    epochs: int | None = option(None, "training epochs (required)", check=POSITIVE)
    train_limit: int | None = option(None, "use only a class-stratified subset of N training images (smoke runs)",
                                     check=POSITIVE)
    cuda: int | None = option(None, "GPU index for --device auto or cuda, -1 = the CPU (the original spelling); "
                                    "N >= 0 with --device cpu or -1 with --device cuda is an error",
                              check=at_least(-1), metavar="N")
    log_dir: str = option("logs", "TensorBoard root; events go to <log-dir>/<output-dir's name>",
                          check=output_folder())
    resume_or_start: bool = option(False, "continue from checkpoint.pt if there is one, else start from scratch")

    def check(self) -> None:
        """The field checks, then: --epochs given, --cuda consistent with --device."""
        super().check()
        if self.epochs is None:
            raise TrisegError("--epochs is required")
        if self.cuda is not None and self.cuda >= 0 and self.device == "cpu":
            raise TrisegError(f"--cuda {self.cuda} conflicts with --device cpu")
        if self.cuda is not None and self.cuda < 0 and self.device == "cuda":
            raise TrisegError("--cuda -1 (the CPU) conflicts with --device cuda")


@dataclass
class LsqTrainConfig(LsqTrainingOptions):
    """``lsq-train``: float training of an LSQ network (SGD + Nesterov, cosine schedule)."""

    model: str = option("resnet_cifar10", "LSQ network", choices=_lsq_model_names)
    lr: float = option(0.1, "peak learning rate of the cosine schedule", check=above(0))
    weight_decay: float = option(5e-4, "SGD weight decay (not on biases and BN parameters)", check=at_least(0))
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (0: none, as in the original tool)",
                                    check=between(0, 1))
    amp: bool = option(False, "mixed precision (float16 on CUDA, bfloat16 on the CPU); may change when a run is "
                              "resumed")


@dataclass
class LsqQatConfig(LsqTrainingOptions):
    """``lsq-qat``: LSQ fine-tuning of an ``lsq-train`` checkpoint, then the integer export."""

    model: str | None = option(None, "LSQ network (default: the checkpoint's; when given it must match)",
                               choices=_lsq_model_names)
    float_checkpoint: str | None = option(None, "checkpoint.pt written by lsq-train, or its zoo/lsq copy (not "
                                                "needed with --resume)", check=input_file())
    init_checkpoint: str | None = option(None, "start instead from this lsq-qat checkpoint.pt of the same network "
                                               "and --keep-bn (progressive quantization, e.g. W4A4 -> W2A2): its "
                                               "weights, and the steps of quantizers of the same width",
                                         check=input_file())
    w_num_bits: int = option(4, "weight bits", check=_lsq_bits)
    a_num_bits: int = option(4, "activation bits", check=_lsq_bits)
    first_last_bits: int = option(8, "bits of the input, first conv weights, classifier weights and classifier "
                                     "input", check=_lsq_bits)
    per_channel_weights: bool = option(False, "one weight step per output channel of every conv (the classifier "
                                              "keeps one): folded BN gives channels very different ranges")
    residual_bits: int | None = option(None, "bits of the residual adds' outputs (default --a-num-bits); when wider, "
                                             "every conv re-quantizes its input to --a-num-bits", check=_lsq_bits)
    weight_step_init: str = option("lsq", "how weight steps start: lsq = 2 mean|w| / sqrt(Qp) (the paper's), mse = the "
                                          "step of least quantization error", choices=_step_inits)
    act_step_init: str = option("mse", "how activation steps start on the calibration batch (same rules; ReLU "
                                       "outputs are sparse, so the paper's rule lands far from the least-error "
                                       "step)", choices=_step_inits)
    keep_bn: bool = option(False, "train every conv with its BatchNorm (batch statistics, as the LSQ paper does) and "
                                  "fold BN into per-channel multipliers and the int32 bias only at export")
    lr: float = option(0.001, "peak learning rate (with BN folded the QAT net has no normalisation and diverges "
                              "at 0.01)", check=above(0))
    weight_decay: float = option(1e-4, "SGD weight decay (never on step sizes or BN parameters)", check=at_least(0))
    teacher: str | None = option(None, "distil from this float checkpoint of the same network (lsq-train's or its "
                                        "zoo/lsq copy, usually the --float-checkpoint)", check=input_file())
    kd_T: float = option(1.0, "distillation temperature (the LSQ paper's 1)", check=between(0, 1000, low_open=True))
    kd_weight: float = option(0.5, "weight of the distillation loss; the cross-entropy gets 1 minus it (the LSQ "
                                   "paper's equal weights)", check=between(0, 1))
    log_dir: str = option("qat_logs", "TensorBoard root; events go to <log-dir>/<output-dir's name>",
                          check=output_folder())

    def check(self) -> None:
        """The shared checks, then: --kd-T and --kd-weight only with a --teacher."""
        super().check()
        default = {f.name: f.default for f in fields(self)}
        if self.teacher is None and any(getattr(self, k) != default[k] for k in ("kd_T", "kd_weight")):
            raise TrisegError("--kd-T and --kd-weight need --teacher (the float model to distil from)")


@dataclass
class LsqInferConfig(BatchOptions, LsqThreadOptions, LsqDataOptions):
    """``lsq-infer``: integer-only evaluation, compared with the fake-quant model when given a checkpoint."""

    checkpoint: str | None = option(None, "QAT checkpoint.pt (exports it, then compares both engines)",
                                    check=input_file())
    int_model: str | None = option(None, "an exported integer model (int_model.pt)", check=input_file())
    export: str | None = option(None, "with --checkpoint: also write the integer model here", check=output_file())
    split: str = option("test", "images to evaluate", choices=("val", "test"))
    batch_size: int = option(256, "batch size", check=POSITIVE)
    json: str | None = option(None, "write the report here as JSON", check=output_file())

    def check(self) -> None:
        """The field checks, then: exactly one model source, --export only with --checkpoint."""
        super().check()
        if (self.checkpoint is None) == (self.int_model is None):
            raise TrisegError("lsq-infer needs exactly one of --checkpoint (QAT) and --int-model")
        if self.export is not None and self.checkpoint is None:
            raise TrisegError("--export needs --checkpoint (an --int-model is already exported)")


# Export: export / export_triseg, verify-export ---------------------------------------------------------------------

def _export_formats() -> list[str]:
    from triseg.export import FORMATS

    return list(FORMATS)


def _onnx_ops() -> list[str]:
    from triseg.export.onnx_graph import ONNX_OPS

    return list(ONNX_OPS)


@dataclass
class ExportConfig(ModelOptions, BackendOptions):
    """``export`` / ``export_triseg``: the INT8 teacher, or the student of a config, as ONNX, QONNX or a C header."""

    cli_hidden = ("engine",)
    config_path: str | None = option(None, "result JSON of a search (Windows paths accepted); without it the plain "
                                           "INT8 teacher is exported", check=input_file(convert=spelled_path))
    allow_other_teacher: bool = option(False, "export even when the INT8 model differs from the teacher the result "
                                              "was searched on (the output says so)")
    format: str = option("onnx", "onnx (onnxruntime runs it as it is), qonnx (maps as MultiThreshold nodes, for "
                                 "FINN) or c-header (scales, zero points, codes and 256-entry tables)",
                         choices=_export_formats)
    output: str | None = option(None, "output file (default <output-dir>/export/<model>[_<config stem>]<suffix>)",
                                check=output_file())
    debug_taps: bool = option(False, "add every tap's codes, before and after its map, as graph outputs",
                              check=only_with("format", "onnx", "qonnx"))
    onnx_ops: str = option("integer", "how convs and linears are written: integer (ConvInteger/MatMulInteger and "
                                      "fbgemm's float32 requantization), qlinear (QLinearConv) or qdq "
                                      "(DequantizeLinear, float op, QuantizeLinear)", choices=_onnx_ops,
                           check=only_with("format", "onnx"))

    def check(self) -> None:
        """The field checks, then: c-header writes a config's maps, so it needs one."""
        super().check()
        if self.format == "c-header" and self.config_path is None:
            raise TrisegError("--format c-header writes a config's maps: pass --config-path")


@dataclass
class VerifyExportConfig(ModelOptions, DataOptions, BackendOptions, BatchOptions):
    """``verify-export``: an exported file in onnxruntime (or qonnx) against the torch INT8 student, image by image."""

    onnx: str = option("", "the exported .onnx file (onnx or qonnx format)", check=input_file(required=True))
    config_path: str | None = option(None, "the result JSON the file was exported from; without it the file must "
                                           "be the plain teacher", check=input_file(convert=spelled_path))
    split: str = option("test", "images to compare", choices=("val", "test"))
    max_images: int | None = option(None, "use only a class-stratified subset of N images of the split", check=POSITIVE)
    batch_size: int = option(256, "batch size", check=POSITIVE)
    ort_optimization: str = option("both", "onnxruntime graph optimisations: off, on (all levels) or both runs",
                                   choices=("off", "on", "both"))
    report_file: str | None = option(None, "also write the report as JSON to this file", check=output_file())


# Sweeps: experiment grids of search jobs ---------------------------------------------------------------------------

@dataclass
class SweepConfig(Options):
    """``sweep``: run a grid of search jobs (in-process, or as Ray tasks), then aggregate them."""

    address: str | None = option(None, "join this Ray cluster (`auto`: the one `ray start` made on this node) "
                                       "instead of starting a local Ray")
    max_parallel: int | None = option(None, "at most N cells at once (default: one per CPU Ray sees)",
                                      check=POSITIVE, metavar="N")
    final_test: bool = option(False, "evaluate every seed of each (model, strategy, objective) group's row chosen "
                                     "on validation once on test and write the table (run after the sweep)")
    spec: str = option("", "the sweep's TOML (or YAML) file: grid, shared options, output folder",
                       check=input_file(required=True), positional=True, metavar="SPEC")
