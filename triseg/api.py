"""The public Python API: what the CLI modes, the benchmarks and notebooks call.

    from triseg import api

    cfg = api.SearchConfig(model="lenet5", search="cmaes", episodes=200, no_test=True,
                           space=api.SpaceOptions(tmax_percentile=30))
    teacher = api.load_teacher("lenet5")             # outputs/, else the zoo
    data = api.load_data(cfg)                        # --data-dir / $TRISEG_DATA_DIR / the shipped sample
    space = api.build_space(teacher, data, cfg.space, cfg.batch_size, cfg.seed)
    run = api.run_search(cfg, teacher, data, space)  # selected on validation, test never opened
    print(run.result.val_drop, run.result.config)
    api.evaluate_test(run.result, teacher, data)     # the one explicit test evaluation
    run.result.write("lenet5_cmaes.json")

Every settings object is a checked dataclass (:mod:`triseg.jobs`): an illegal value raises
:class:`triseg.errors.TrisegError` with the same one-line message the CLI prints.
"""

from triseg.approx.config import LayerCodes, TrisegConfig, load_config
from triseg.artifacts import ZOO_DIR, load_int8, qat_skeleton, stage_path
from triseg.approx.intsim import simulate
from triseg.approx.lut import KERNELS as LUT_KERNELS, LutEdit, int8_maps, map_rows, quint8_table
from triseg.approx.student import Config, StudentEval, evaluate_student, install
from triseg.artifacts import atomic_write_text
from triseg.cli.parser import parse_options
from triseg.data import Cifar10, Split, batches, load_cifar10
from triseg.errors import TrisegError
from triseg.export import ExportRequest, export, onnx_graph, qonnx_graph
from triseg.export.deps import require as require_extra
from triseg.export.verify import QonnxRunner, compare, op_counts, optimised_ops, ort_runner, ort_session
from triseg.hardware.cost import CostCounts, HardwareReport, count, hardware_report
from triseg.models import MODELS, build_model
from triseg.quant import activation_top_code, set_engine
from triseg.quant import convert as convert_int8
from triseg.jobs import FinalTestConfig, SearchConfig, SpaceOptions, SupervisedJobConfig
from triseg.search.base import Candidate, EpisodeBatches, Evaluator, Score, Strategy, TopK, candidates_from
from triseg.search.exact_mse import exact_mse_codes
from triseg.search.job import (SearchRun, build_space, evaluate_test, final_test, load_data, make_evaluator,
                               run_search, run_supervised, select_result)
from triseg.recorder import EditOnlyRecorder, attach
from triseg.search.legal import project
from triseg.search.ppo import PPOConfig, PPOStrategy
from triseg.search.registry import STRATEGIES
from triseg.search.result import RunPaths, SearchResult, TestMetrics, Validation
from triseg.search.select import select_savings, split_half_risk, teacher_on_validation
from triseg.search.space import SearchSpace
from triseg.search.space import build_space as calibrate_space
from triseg.search.supervised import SupervisedConfig
from triseg.search.warm import WarmConfig
from triseg.teacher import Teacher, load_teacher
from triseg.jobs import LsqInferConfig, LsqQatConfig, LsqTrainConfig
from triseg.lsq.infer import run_infer as lsq_infer
from triseg.lsq.integer import IntegerModel, export_integer
from triseg.lsq.models import build_model as build_lsq_model
from triseg.lsq.qat import QuantNet, to_qat
from triseg.lsq.quantizer import keep_steps_positive
from triseg.lsq.train import load_lsq_checkpoint
from triseg.lsq.train import model_from_checkpoint as lsq_model_from_checkpoint
from triseg.lsq.train import train_float as lsq_train
from triseg.lsq.train import train_qat as lsq_qat

__all__ = [
    "EditOnlyRecorder", "ExportRequest", "LUT_KERNELS", "LutEdit", "int8_maps", "map_rows", "quint8_table",
    "QonnxRunner", "compare", "export", "onnx_graph", "op_counts",
    "optimised_ops", "ort_runner", "ort_session", "qonnx_graph", "require_extra", "set_engine",
    "EpisodeBatches", "HardwareReport", "MODELS", "PPOStrategy", "ZOO_DIR", "activation_top_code", "build_model",
    "calibrate_space", "convert_int8", "hardware_report", "load_int8", "qat_skeleton", "stage_path",
    "Cifar10", "Config", "Evaluator", "FinalTestConfig", "Score", "Strategy", "TopK", "exact_mse_codes",
    "parse_options", "select_result", "atomic_write_text", "attach", "batches", "install", "simulate", "LayerCodes",
    "PPOConfig", "RunPaths", "STRATEGIES", "SearchConfig",
    "SearchResult", "SearchRun", "SearchSpace", "SpaceOptions", "Split", "StudentEval", "SupervisedConfig",
    "SupervisedJobConfig", "Teacher", "TestMetrics", "TrisegConfig", "TrisegError", "Validation", "WarmConfig",
    "build_space", "evaluate_student", "evaluate_test", "final_test", "load_cifar10", "load_config", "load_data",
    "load_teacher", "make_evaluator", "run_search", "run_supervised", "split_half_risk",
    "Candidate", "candidates_from", "select_savings", "teacher_on_validation", "CostCounts", "count", "project",
    "IntegerModel", "LsqInferConfig", "LsqQatConfig", "LsqTrainConfig", "QuantNet", "build_lsq_model",
    "export_integer", "load_lsq_checkpoint", "lsq_infer", "lsq_model_from_checkpoint", "lsq_qat", "lsq_train",
    "keep_steps_positive", "to_qat",
]
