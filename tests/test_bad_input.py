"""Bad input in every mode: exit code 2, one ``error:`` line, no traceback, and no new or changed file anywhere.

The cases come in classes. Generated from the modes' settings dataclasses: every numeric option out of
its range (and non-finite, and too large), every choice option with an unknown value, every path option
(an output folder that is a file, inside a file, read-only or immutable; a missing input, a folder given
for a file; a result name that leaves its folder), and options a mode does not offer. Listed by hand:
inputs that only fail while a mode runs (damaged archives, pickles, images, model files, checkpoints,
manifests and results, results of another teacher, --resume without a checkpoint, sizes the data cannot
meet). Every case runs in-process through ``triseg.cli.main`` on the shipped sample; a few run as
subprocesses to show that no traceback reaches the terminal. Before and after each case the folders it
could touch (its fixtures, the working folder, the zoo, the package's sample folder, the data cache in
the home folder) are snapshotted as (path, size, mtime_ns).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import torch

from triseg import artifacts
from triseg.cli import legacy_main, main
from triseg.cli.modes import all_modes
from triseg.cli.parser import offered, type_hints
from triseg.data import SAMPLE_ARCHIVE, load_cifar10
from triseg.options import INT_MAX, Options, PathCheck, choices_of, flag

from test_analysis import CONFIG, write_config
from test_data import make_tree

ROOT = Path(__file__).resolve().parents[1]
MODES = all_modes()
ERROR = re.compile(r"^error: ")
PROGRESS = re.compile(r"\d+%\|")  # a tqdm bar
HUGE = "9" * 20
LENET_TEACHER = artifacts.stage_path(artifacts.ZOO_DIR, "lenet5", "int8")

# A command line per mode that is otherwise valid, so that a generated case fails on its one bad value.
BASE: dict[str, list[str]] = {
    "models": [],
    "train_float": ["--model", "lenet5", "--epochs", "1", "--max-train-batches", "1", "--batch-size", "16"],
    "train_qat": ["--model", "lenet5", "--qat-epochs", "1", "--max-train-batches", "1", "--batch-size", "16"],
    "export_int8": ["--model", "lenet5"],
    "eval_int8": ["--model", "lenet5"],
    "train_ppo_triseg": ["--model", "lenet5", "--episodes", "2", "--calib-batches", "1", "--batch-size", "16",
                         "--no-test"],
    "search": ["--model", "lenet5", "--episodes", "2", "--calib-batches", "1", "--batch-size", "16", "--no-test"],
    "eval_ppo_int8": ["--model", "lenet5", "--config-path", "{bad}/cfg.json"],
    "pareto": ["--config-path", "{bad}/cfg.json"],
    "final_test": ["--model", "lenet5", "--config-path", "{bad}/cfg.json"],
    "train_supervised_triseg": ["--model", "lenet5", "--calib-batches", "1", "--batch-size", "16", "--no-test",
                                "--epochs", "1", "--steps-per-epoch", "1"],
    "zoo_add": ["--model", "lenet5", "--output-dir", "{bad}/outs", "--zoo-dir", "{bad}/newzoo"],
    "dump_acts_float": ["--model", "lenet5"],
    "dump_acts_int8": ["--model", "lenet5"],
    "analyze_variance": ["--model", "lenet5"],
    "collect_percentiles": ["--model", "lenet5"],
    "analyze_sensitivity": ["--model", "lenet5", "--config-path", "{bad}/cfg.json"],
    "report": ["--model", "lenet5", "--config-path", "{bad}/cfg.json"],
    "lsq-train": ["--model", "tiny_vgg", "--epochs", "1", "--output-dir", "{bad}/lsqrun", "--train-limit", "16"],
    "lsq-qat": ["--epochs", "1", "--output-dir", "{bad}/lsqrun", "--float-checkpoint", "{bad}/lsq_fake_float.pt"],
    "lsq-infer": ["--int-model", "{bad}/lsq_fake_int.pt"],
    "lsq-zoo-add": ["--run-dir", "{bad}/afolder", "--name", "x", "--zoo-dir", "{bad}/newlsqzoo"],
    "export": ["--model", "lenet5"],
    "export_triseg": ["--model", "lenet5"],
    "verify-export": ["--model", "lenet5", "--onnx", "{bad}/garbage.pth"],
}


# --- generated cases ------------------------------------------------------------------------------------------------

def _fields(cls: type[Options]) -> list[tuple[dataclasses.Field, Any]]:
    """The offered fields of a mode's settings (nested groups flattened) with their types."""
    out = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if not offered(cls, f):
            continue
        tp = hints[f.name]
        if isinstance(tp, type) and issubclass(tp, Options):
            sub_hints = type_hints(tp)
            out += [(g, sub_hints[g.name]) for g in dataclasses.fields(tp) if g.metadata.get("cli", True)]
        else:
            out.append((f, tp))
    return out


def _base(tp: Any) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


def _rejected(f: dataclasses.Field, tp: Any, text: str) -> bool:
    """Whether the command line rejects ``text`` for the field: not a number of its type, too large, or
    outside the field's range."""
    try:
        value = tp(text)
    except ValueError:
        return True
    if tp is int and abs(value) > INT_MAX:
        return True
    check = f.metadata.get("check")
    return check is not None and check(value) is not None


def numeric_cases() -> list[Any]:
    """Every numeric option of every mode: a value out of its range; each option once with every class of
    bad number (out of range, NaN, infinite, too large, not a number)."""
    cases, seen = [], set()
    for mode in MODES:
        for i, (f, tp) in enumerate(_fields(MODES[mode].config)):
            tp = _base(tp)
            if tp not in (int, float) or isinstance(f.metadata.get("check"), PathCheck):
                continue
            semantic = next((v for v in ("-1", "0", "-999", "999") if _rejected(f, tp, v)), None)
            extra = ["nan", "inf", "abc"] if tp is float else [HUGE, "1.5"]
            values = ([semantic] if semantic else []) + ([extra[i % len(extra)]] if f.name in seen else extra)
            seen.add(f.name)
            for value in values:
                if _rejected(f, tp, value):
                    cases.append(pytest.param(mode, [*BASE.get(mode, []), flag(f.name), value], flag(f.name),
                                              id=f"{mode}-{f.name}={value}"))
    return cases


def choice_cases() -> list[Any]:
    """Every choice option of every mode with a value it does not know."""
    return [pytest.param(mode, [*BASE.get(mode, []), flag(f.name), "tpu"], flag(f.name), id=f"{mode}-{f.name}=tpu")
            for mode in MODES for f, _ in _fields(MODES[mode].config) if choices_of(f) is not None]


def unoffered_cases() -> list[Any]:
    """Options a mode does not use: its hidden fields, and two options of other modes."""
    foreign = ["--backend", "--data-dir", "--episodes", "--seed", "--output-dir", "--config-path", "--lr"]
    cases = []
    for mode, m in MODES.items():
        shown = {flag(f.name) for f, _ in _fields(m.config)}
        hidden = [flag(name) for name in m.config.cli_hidden]
        for option in hidden + [o for o in foreign if o not in shown][:2]:
            cases.append(pytest.param(mode, [*BASE.get(mode, []), option, "1"], option, id=f"{mode}-unoffered{option}"))
    return cases


PATH_VALUES = {
    "out_dir": ["{bad}/afile.txt", "{bad}/afile.txt/sub", "{bad}/readonly", "{bad}/immutable/sub"],
    "in_file": ["{bad}/missing.json", "{bad}/afolder"],
    "in_dir": ["{bad}/missing", "{bad}/afile.txt"],
    "in_path": ["{bad}/missing"],
    "out_file": ["{bad}/afolder", "{bad}/afile.txt/x.json", "{bad}/readonly/x.json"],
    "out_name": ["../../escape.json", "sub/x.json", "taken"],
}


# lsq-infer takes one model source: a path case of --checkpoint drops the base's --int-model, and
# --export (which needs --checkpoint) gets one
PATH_BASE = {("lsq-infer", "checkpoint"): [], ("lsq-infer", "export"): ["--checkpoint", "{bad}/lsq_fake_float.pt"]}


def path_cases() -> list[Any]:
    """Every path option of every mode with each way its kind of path can be wrong."""
    cases = []
    for mode, m in MODES.items():
        for f, _ in _fields(m.config):
            check = f.metadata.get("check")
            if not isinstance(check, PathCheck):
                continue
            base = PATH_BASE.get((mode, f.name), BASE.get(mode, []))
            for value in PATH_VALUES[check.kind]:
                argv = [flag(f.name), value]
                if value == "taken":  # a folder where the output file goes
                    argv = [flag(f.name), "taken.out", "--output-dir", "{bad}/withdir"]
                cases.append(pytest.param(mode, [*base, *argv], flag(f.name), id=f"{mode}-{f.name}={value}"))
            if check.required:
                cases.append(pytest.param(mode, [*base, flag(f.name), ""], flag(f.name),
                                          id=f"{mode}-{f.name}=empty"))
    return cases


GENERATED = numeric_cases() + choice_cases() + unoffered_cases() + path_cases()


# --- cases that fail while a mode runs --------------------------------------------------------------------------------

def case(id: str, *argv: str, expect: str, env: dict[str, str] | None = None) -> Any:
    return pytest.param(list(argv), expect, env or {}, id=id)


def based(id: str, mode: str, *argv: str, expect: str) -> Any:
    """A case on the mode's otherwise valid command line."""
    return case(id, mode, *BASE[mode], *argv, expect=expect)


RUNTIME = [
    # damaged data: archives, pickles, images, caches, the environment variable
    case("train_float-truncated-archive", "train_float", "--model", "lenet5", "--data-dir", "{bad}/trunc.tar.gz",
         expect="is damaged or truncated"),
    case("search-truncated-archive", "search", "--model", "lenet5", "--data-dir", "{bad}/trunc.tar.gz",
         expect="is damaged or truncated"),
    case("dump-truncated-archive", "dump_acts_int8", "--model", "lenet5", "--data-dir", "{bad}/trunc.tar.gz",
         expect="is damaged or truncated"),
    case("lsq-train-truncated-archive", "lsq-train", "--epochs", "1", "--output-dir", "{bad}/lsqrun", "--data-dir",
         "{bad}/trunc.tar.gz", expect="is damaged or truncated"),
    case("garbage-archive", "train_float", "--model", "lenet5", "--data-dir", "{bad}/garbage.tar.gz",
         expect="garbage.tar.gz"),
    case("garbage-pickles", "train_float", "--model", "lenet5", "--data-dir", "{bad}/pickles",
         expect="is not a CIFAR-10 python batch"),
    case("pickles-without-meta", "eval_int8", "--model", "lenet5", "--data-dir", "{bad}/nometa",
         expect="batches.meta is missing"),
    case("pickles-bad-labels", "eval_int8", "--model", "lenet5", "--data-dir", "{bad}/badlabels",
         expect="labels outside"),
    case("pickles-of-twelve-classes", "eval_int8", "--model", "lenet5", "--data-dir", "{bad}/twelve",
         expect="has 12 classes (c0, c1, c2"),
    case("tree-of-two-classes", "train_float", "--model", "lenet5", "--data-dir", "{bad}/twoclasses", "--val-size",
         "2", expect="has 2 classes (cat, dog); the models predict 10"),
    case("search-on-two-classes", "search", "--model", "lenet5", "--data-dir", "{bad}/twoclasses", "--val-size", "2",
         expect="the models predict 10"),
    case("empty-data-folder", "train_float", "--model", "lenet5", "--data-dir", "{bad}/afolder",
         expect="has no train/ folder"),
    case("unreadable-image", "eval_int8", "--model", "lenet5", "--data-dir", "{bad}/badimg",
         expect="unreadable image"),
    case("data-is-a-text-file", "train_float", "--model", "lenet5", "--data-dir", "{bad}/afile.txt",
         expect="neither a folder nor"),
    case("env-data-dir-truncated", "eval_int8", "--model", "lenet5", expect="is damaged or truncated",
         env={"TRISEG_DATA_DIR": "{bad}/trunc.tar.gz"}),
    case("lsq-imagenet-without-tree", "lsq-train", "--epochs", "1", "--output-dir", "{bad}/lsqrun", "--dataset",
         "imagenet", "--data-dir", "{bad}/afolder", expect="train/ and val/"),
    # damaged or foreign model files
    case("eval_int8-truncated-model", "eval_int8", "--model", "lenet5", "--output-dir", "{bad}/outs_trunc",
         expect="not a readable triseg model file"),
    case("train_qat-truncated-float", "train_qat", "--model", "lenet5", "--output-dir", "{bad}/outs_trunc",
         expect="not a readable triseg model file"),
    case("search-truncated-teacher", "search", "--model", "lenet5", "--output-dir", "{bad}/outs_trunc",
         expect="not a readable triseg model file"),
    case("model-file-of-another-model", "eval_int8", "--model", "alexnet", "--output-dir", "{bad}/outs_wrong",
         expect="does not hold the int8 stage of alexnet"),
    case("model-file-foreign-weights", "eval_int8", "--model", "lenet5", "--output-dir", "{bad}/outs_foreign",
         expect="do not fit"),
    case("model-file-unknown-backend", "export_int8", "--model", "lenet5", "--output-dir", "{bad}/outs_foreign",
         expect="no known backend"),
    case("export_int8-backend-conflict", "export_int8", "--model", "lenet5", "--backend", "qnnpack",
         expect="conflicts with the model file's backend"),
    # configs and results: a folder, damaged, foreign, illegal, of another teacher, tested already
    case("eval-config-is-folder", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/afolder",
         expect="is a folder"),
    case("sensitivity-config-is-folder", "analyze_sensitivity", "--model", "lenet5", "--config-path",
         "{bad}/afolder", expect="is a folder"),
    case("report-config-is-folder", "report", "--model", "lenet5", "--config-path", "{bad}/afolder",
         expect="is a folder"),
    case("final_test-config-is-folder", "final_test", "--model", "lenet5", "--config-path", "{bad}/afolder",
         expect="is a folder"),
    case("eval-config-garbage", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/garbage.json",
         expect="not valid JSON"),
    case("eval-config-binary", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/binary.json",
         expect="not valid JSON"),
    case("eval-config-list", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/list.json",
         expect="not a triseg config"),
    case("report-config-garbage", "report", "--model", "lenet5", "--config-path", "{bad}/garbage.json",
         expect="not valid JSON"),
    case("eval-config-other-model", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/alexnet.json",
         expect="is for model alexnet"),
    case("eval-config-illegal-codes", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/badcodes.json",
         expect="layer conv1: v1"),
    case("eval-config-no-layers", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/nolayers.json",
         expect="approximates no layer"),
    case("eval-config-unknown-layer", "eval_ppo_int8", "--model", "lenet5", "--config-path",
         "{bad}/unknown_layer.json", expect="are not approximated layers"),
    case("eval-config-windows-path", "eval_ppo_int8", "--model", "lenet5", "--config-path",
         ".\\outputs\\tri_ppo_int_codes\\x.json", expect="not found"),
    case("eval-other-teacher", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/other_teacher.json",
         expect="another teacher"),
    case("sensitivity-other-teacher", "analyze_sensitivity", "--model", "lenet5", "--config-path",
         "{bad}/other_teacher.json", expect="another teacher"),
    case("report-other-teacher", "report", "--model", "lenet5", "--config-path", "{bad}/other_teacher.json",
         expect="another teacher"),
    case("final_test-other-teacher", "final_test", "--model", "lenet5", "--config-path", "{bad}/other_teacher.json",
         expect="another teacher"),
    case("final_test-tested-already", "final_test", "--model", "lenet5", "--config-path", "{bad}/tested.json",
         expect="already evaluated"),
    case("final_test-not-a-result", "final_test", "--model", "lenet5", "--config-path", "{bad}/cfg.json",
         expect="not a search result"),
    case("report-candidate-mistyped", "report", "--model", "lenet5", "--config-path", "{bad}/mistyped_candidate.json",
         expect="$.validation.candidates[0].episode must be integer, not 'one'"),
    case("pareto-front-mistyped", "pareto", "--config-path", "{bad}/mistyped_front.json",
         expect="not a search result ($.pareto_front[0] must be object, not 3)"),
    case("pareto-pick-unknown-layer", "pareto", "--config-path", "{bad}/front_badlayer.json", "--pick", "0",
         expect="config layers ['convX'] are not approximated layers of lenet5"),
    case("final_test-teacher-mistyped", "final_test", "--model", "lenet5", "--config-path",
         "{bad}/mistyped_teacher.json", expect="$.teacher must be object"),
    case("export-coverage-mistyped", "export", "--model", "lenet5", "--format", "c-header", "--config-path",
         "{bad}/mistyped_coverage.json", expect="$.coverage.layers.conv1.mapped_share must be number"),
    case("eval-config-deep", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/deep.json",
         expect="nested too deeply"),
    case("report-sensitivity-garbage", "report", "--model", "lenet5", "--config-path", "{bad}/cfg.json",
         "--sensitivity-file", "{bad}/garbage.json", expect="not valid JSON"),
    case("report-sensitivity-foreign", "report", "--model", "lenet5", "--config-path", "{bad}/cfg.json",
         "--sensitivity-file", "{bad}/list.json", expect="is not for this config"),
    case("report-sensitivity-incomplete", "report", "--model", "lenet5", "--config-path", "{bad}/cfg.json",
         "--sensitivity-file", "{bad}/sens_incomplete.json", expect="not a file with the numbers the report needs"),
    case("report-sensitivity-ranking-mistyped", "report", "--model", "lenet5", "--config-path", "{bad}/cfg.json",
         "--sensitivity-file", "{bad}/sens_ranking.json", expect="($.ranking must be array, not 5)"),
    case("eval-cost-table-garbage", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/cfg.json",
         "--cost-table", "{bad}/garbage.json", expect="cost table"),
    case("search-cost-table-unknown-key", "search", "--model", "lenet5", "--cost-table", "{bad}/cost_unknown.json",
         expect="unknown keys"),
    # --resume: no checkpoint, a damaged one, one made with other settings
    case("train_float-resume-none", "train_float", "--model", "lenet5", "--resume", expect="no checkpoint"),
    case("train_qat-resume-none", "train_qat", "--model", "lenet5", "--resume", expect="no checkpoint"),
    based("search-resume-none", "search", "--resume", expect="no checkpoint"),
    case("lsq-train-resume-none", "lsq-train", "--epochs", "1", "--output-dir", "{bad}/lsqrun", "--resume",
         expect="no checkpoint"),
    case("lsq-qat-resume-none", "lsq-qat", "--epochs", "1", "--output-dir", "{bad}/lsqrun", "--resume",
         expect="no checkpoint"),
    based("train_float-resume-truncated", "train_float", "--output-dir", "{bad}/run_trunc", "--resume",
         expect="is damaged"),
    based("train_float-resume-other-settings", "train_float", "--output-dir", "{bad}/run_other", "--resume",
         expect="other settings"),
    based("search-resume-garbage", "search", "--output-dir", "{bad}/run_garbage", "--resume",
         expect="is damaged"),
    based("search-resume-other-strategy", "search", "--output-dir", "{bad}/run_other", "--resume",
         expect="other settings"),
    case("lsq-train-resume-truncated", "lsq-train", "--epochs", "1", "--output-dir", "{bad}/lsq_trunc", "--resume",
         expect="is damaged"),
    case("lsq-train-checkpoint-exists", "lsq-train", "--epochs", "1", "--output-dir", "{bad}/lsq_trunc",
         expect="pass --resume"),
    case("lsq-qat-resume-float-checkpoint", "lsq-qat", "--epochs", "1", "--output-dir", "{bad}/lsq_float",
         "--resume", expect="is not a QAT checkpoint"),
    # LSQ model files
    based("lsq-qat-foreign-float-checkpoint", "lsq-qat", expect="does not hold a model"),
    case("lsq-qat-garbage-float-checkpoint", "lsq-qat", "--epochs", "1", "--output-dir", "{bad}/lsqrun",
         "--float-checkpoint", "{bad}/garbage.pth", expect="is damaged"),
    case("lsq-qat-truncated-float-checkpoint", "lsq-qat", "--epochs", "1", "--output-dir", "{bad}/lsqrun",
         "--float-checkpoint", "{bad}/trunc.pth", expect="is damaged"),
    case("lsq-qat-no-float-checkpoint", "lsq-qat", "--epochs", "1", "--output-dir", "{bad}/lsqrun",
         expect="needs --float-checkpoint"),
    case("lsq-infer-garbage-int-model", "lsq-infer", "--int-model", "{bad}/garbage.pth", expect="is damaged"),
    case("lsq-infer-foreign-int-model", "lsq-infer", "--int-model", "{bad}/lsq_fake_int.pt",
         expect="integer model"),
    case("lsq-infer-garbage-checkpoint", "lsq-infer", "--checkpoint", "{bad}/garbage.pth", expect="is damaged"),
    case("lsq-infer-two-models", "lsq-infer", "--checkpoint", "{bad}/garbage.pth", "--int-model",
         "{bad}/garbage.pth", expect="exactly one"),
    # zoo_add: damaged manifest and evaluation, missing stages
    based("lsq-zoo-add-no-checkpoint", "lsq-zoo-add", expect="checkpoint.pt not found"),
    case("lsq-zoo-add-damaged-checkpoint", "lsq-zoo-add", "--run-dir", "{bad}/lsq_trunc", "--name", "x",
         "--zoo-dir", "{bad}/newlsqzoo", expect="is damaged"),
    case("lsq-zoo-add-weights-do-not-fit", "lsq-zoo-add", "--run-dir", "{bad}/lsq_misfit", "--name", "x",
         "--zoo-dir", "{bad}/newlsqzoo", expect="checkpoint.pt: the float checkpoint does not hold a model this"),
    case("lsq-zoo-add-unfinished-run", "lsq-zoo-add", "--run-dir", "{bad}/lsq_float", "--name", "x",
         "--zoo-dir", "{bad}/newlsqzoo", expect="is not a finished run"),
    case("zoo_add-damaged-manifest", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs", "--zoo-dir",
         "{bad}/zoo_badmanifest", expect="zoo manifest"),
    case("zoo_add-deep-manifest", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs", "--zoo-dir",
         "{bad}/zoo_deepmanifest", expect="is nested too deeply to be read: repair it"),
    case("zoo_add-manifest-is-folder", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs", "--zoo-dir",
         "{bad}/zoo_manifest_dir", expect="is a folder"),
    case("zoo_add-no-evaluation", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs_trunc", "--zoo-dir",
         "{bad}/newzoo", expect="run eval_int8 first"),
    case("zoo_add-damaged-evaluation", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs_badeval",
         "--zoo-dir", "{bad}/newzoo", expect="INT8 evaluation"),
    case("zoo_add-evaluation-of-another-model", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs_evalother",
         "--zoo-dir", "{bad}/newzoo", expect="is of alexnet on fbgemm, not of lenet5 on fbgemm: run eval_int8 again"),
    case("zoo_add-weights-do-not-fit", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs_misfit",
         "--zoo-dir", "{bad}/newzoo", expect="holds weights that do not fit triseg's lenet5"),
    case("zoo_add-missing-stage", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs_noqat",
         "--zoo-dir", "{bad}/newzoo", expect="run train_qat first"),
    case("zoo_add-truncated-stage", "zoo_add", "--model", "lenet5", "--output-dir", "{bad}/outs_truncstage",
         "--zoo-dir", "{bad}/newzoo", expect="not a readable triseg model file"),
    # sizes the data cannot meet, devices that are not there
    based("train_float-val-size-too-big", "train_float", "--val-size", "100000", expect="--val-size"),
    based("search-val-size-too-big", "search", "--val-size", "100000", expect="--val-size"),
    based("lsq-train-val-size-too-big", "lsq-train", "--val-size", "100000", expect="--val-size"),
    case("train_float-batch-too-big", "train_float", "--model", "lenet5", "--batch-size", "100000",
         expect="fewer than one batch"),
    case("search-batch-too-big", "search", "--model", "lenet5", "--batch-size", "100000",
         expect="fewer than --batch-size"),
    based("train_float-cuda-missing", "train_float", "--device", "cuda", expect="no CUDA device"),
    based("search-cuda-missing", "search", "--device", "cuda", expect="no CUDA device"),
    based("lsq-cuda-conflict", "lsq-train", "--device", "cpu", "--cuda", "0", expect="conflicts"),
    based("lsq-cuda-missing", "lsq-train", "--cuda", "3", expect="no such CUDA device"),
    # output files that are folders
    based("train_float-stage-file-is-folder", "train_float", "--output-dir", "{bad}/withdir",
         expect="is a folder"),
    case("eval_int8-output-is-folder", "eval_int8", "--model", "lenet5", "--output-dir", "{bad}/withdir",
         expect="is a folder"),
    based("train_float-checkpoints-is-file", "train_float", "--output-dir", "{bad}/subfile",
         expect="checkpoints"),
    case("eval_int8-output-immutable", "eval_int8", "--model", "lenet5", "--output-dir", "{bad}/immfile",
         expect="immutable"),
    case("config-broken-link", "eval_ppo_int8", "--model", "lenet5", "--config-path", "{bad}/broken.json",
         expect="broken link"),
    case("lsq-infer-export-over-checkpoint", "lsq-infer", "--checkpoint", "{bad}/lsq_fake_float.pt", "--export",
         "{bad}/lsq_fake_float.pt", expect="would overwrite"),
    # options that would be ignored with the other options given
    case("loader-workers-without-imagenet", "lsq-infer", "--int-model", "{bad}/lsq_fake_int.pt", "--loader-workers",
         "0", expect="applies only with --dataset imagenet"),
    based("val-size-with-imagenet", "lsq-train", "--dataset", "imagenet", "--val-size", "10",
          expect="applies only with --dataset cifar10"),
    based("freeze-bn-after-the-last-epoch", "train_qat", "--freeze-bn-epoch", "1", expect="must be below --qat-epochs"),
    case("variance-float-with-engine", "analyze_variance", "--model", "lenet5", "--stage", "float", "--engine", "x86",
         expect="applies only with --stage int8"),
    case("lsq-qat-resume-with-float-checkpoint", "lsq-qat", "--epochs", "1", "--output-dir", "{bad}/lsq_float",
         "--resume", "--float-checkpoint", "{bad}/lsq_fake_float.pt", expect="not used with --resume"),
    # values in range that make a run diverge
    based("train_float-diverges", "train_float", "--lr", "1e30", expect="diverged"),
    based("lsq-train-diverges", "lsq-train", "--lr", "1e30", expect="diverged"),
    based("search-diverges", "search", "--kd-T", "1e-300", expect="non-finite reward"),
    based("ppo-lr-out-of-range", "search", "--lr", "1e30", "--update-timestep", "2", "--episodes", "20",
          expect="--lr must be in (0, 1]"),
    based("train_qat-diverges", "train_qat", "--qat-lr", "1e30", "--max-train-batches", "2", expect="diverged"),
    # a report needs its search's files: damaged ones stop it before it writes anything
    case("report-damaged-history", "report", "--model", "lenet5", "--config-path",
         "{bad}/res_history/tri_ppo_int_codes/r.json", "--max-images", "8", "--hist-batches", "1",
         expect="history file"),
    case("report-damaged-search-checkpoint", "report", "--model", "lenet5", "--config-path",
         "{bad}/res_ckpt/tri_ppo_int_codes/r.json", "--max-images", "8", "--hist-batches", "1",
         expect="not a readable search checkpoint"),
    case("no-mode", expect="a mode is required"),
    # the list of values that were accepted
    case("kd-T-0", "search", "--kd-T", "0", expect="--kd-T"),
    case("kd-T-negative", "search", "--kd-T", "-1", expect="--kd-T"),
    case("attention-weight-nan", "search", "--attention-weight", "nan", expect="--attention-weight"),
    case("max-acc-drop-nan", "search", "--max-acc-drop", "nan", expect="--max-acc-drop"),
    case("warm-prob-2", "search", "--search", "ppo-warm", "--warm-prob", "2", expect="--warm-prob"),
    case("max-train-batches-0", "train_float", "--max-train-batches", "0", expect="--max-train-batches"),
    case("lsq-train-epochs-0", "lsq-train", "--epochs", "0", "--output-dir", "{bad}/lsqrun", expect="--epochs"),
    case("train_float-val-size-0", "train_float", "--val-size", "0", expect="--val-size"),
    case("search-val-size-0", "search", "--val-size", "0", expect="--val-size"),
    case("stop-after-0", "search", "--stop-after", "0", expect="--stop-after"),
    case("epochs-0", "train_float", "--epochs", "0", expect="--epochs"),
    case("epochs-negative", "train_float", "--epochs", "-2", expect="--epochs"),
    case("qat-epochs-0", "train_qat", "--qat-epochs", "0", expect="--qat-epochs"),
    case("lr-negative", "train_float", "--lr", "-1", expect="--lr"),
    case("result-file-escapes", "search", "--result-file", "../../escape.json", expect="--result-file"),
    case("engine-tpu", "eval_int8", "--engine", "tpu", expect="--engine"),
    case("models-backend", "models", "--backend", "tpu", expect="unrecognized arguments"),
    case("workers-too-many", "train_float", "--workers", "100000", expect="--workers"),
    case("seed-too-large", "search", "--seed", HUGE, expect="--seed"),
    case("unknown-mode", "fly", expect="invalid choice"),
]


# --- fixtures and the check -----------------------------------------------------------------------------------------

def _garbage(path: Path, size: int = 4096) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes((i * 151 + 7) % 256 for i in range(size)))
    return path


def _truncated(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    data = src.read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    return dst


def _chattr(flag_: str, path: Path) -> bool:
    tool = shutil.which("chattr")
    return tool is not None and subprocess.run([tool, flag_, str(path)], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def bad(tmp_path_factory: pytest.TempPathFactory):
    """A folder of bad inputs (and a few good ones to combine them with), built once."""
    load_cifar10(None)  # the sample's data cache exists before any snapshot
    b = tmp_path_factory.mktemp("bad")
    (b / "afile.txt").write_text("not a folder\n")
    (b / "afolder").mkdir()
    (b / "cwd").mkdir()
    (b / "garbage.json").write_text("{not json")
    (b / "list.json").write_text("[1, 2]")
    (b / "binary.json").write_bytes(b"\xff\xfe\x00\x81")
    _truncated(SAMPLE_ARCHIVE, b / "trunc.tar.gz")
    _garbage(b / "garbage.tar.gz")
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch",
                 "batches.meta"):
        _garbage(b / "pickles" / "cifar-10-batches-py" / name)
    _garbage(b / "nometa" / "cifar-10-batches-py" / "data_batch_1")
    _cifar_pickles(b / "badlabels", label=12)
    _cifar_pickles(b / "twelve", label=11, classes=12)
    make_tree(b / "twoclasses", classes=["cat", "dog"])
    _garbage(b / "badimg" / "train" / "cat" / "a.png")
    _garbage(b / "badimg" / "test" / "cat" / "b.png")
    _truncated(LENET_TEACHER, b / "trunc.pth")
    _garbage(b / "garbage.pth")
    write_config(b / "cfg.json")
    write_config(b / "alexnet.json", model="alexnet")
    write_config(b / "badcodes.json", {"conv1": (5, 2, 20, 24, 31)})
    write_config(b / "nolayers.json", {})
    write_config(b / "unknown_layer.json", {"conv9": CONFIG["conv1"]})
    validation = {"acc_teacher": 50.0, "acc_student": 49.0, "acc_drop": 1.0, "candidates": []}
    write_config(b / "other_teacher.json", selection="constrained-best", validation=validation, coverage={},
                 teacher={"file": "lenet5_int8.pth", "sha256": "0" * 64, "backend": "fbgemm"})
    write_config(b / "tested.json", selection="constrained-best", validation=validation, coverage={},
                 metrics={"acc_teacher": 50.0, "acc_student": 49.0, "acc_drop": 1.0})
    candidates = [{"episode": 1, "reward": 0.1, "val_drop": 0.0, "val_acc": 1.0}]
    for run in ("res_history", "res_ckpt"):
        write_config(b / run / "tri_ppo_int_codes" / "r.json", history_file="r.history.json", max_acc_drop=2.0,
                     validation={**validation, "candidates": candidates})
    (b / "res_history" / "tri_ppo_int_codes" / "r.history.json").write_text("{garbage")
    _garbage(b / "res_ckpt" / "checkpoints" / "lenet5__ppo__0__r.search.ckpt")
    for name, fields in {"mistyped_candidate": {"validation": {**validation, "candidates": [{**candidates[0],
                                                                                           "episode": "one"}]}},
                         "mistyped_front": {"validation": validation, "pareto_front": [3]},
                         "mistyped_teacher": {"validation": validation, "teacher": 5},
                         "mistyped_coverage": {"coverage": {"layers": {"conv1": {"mapped_share": "most"}}}}}.items():
        write_config(b / f"{name}.json", **fields)
    codes = dict(zip(("t1_code", "v1_code", "t2_code", "v2_code", "tmax_code"), CONFIG["conv1"]))
    write_config(b / "front_badlayer.json", validation=validation, pareto_front=[
        {"val_drop": 1.0, "val_acc": 49.0, "multiplies_left": 0.5, "episode": 1, "layers": {"convX": codes}}])
    (b / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (b / "sens_incomplete.json").write_text(json.dumps({"model": "lenet5", "layers": {k: {} for k in CONFIG}}))
    sens = {"model": "lenet5", "split": "val", "images": 8, "acc_teacher": 50.0, "acc_student": 40.0, "drop_full": 10.0,
            "ranking": 5, "layers": {k: {"drop_only": 1.0, "drop_all_but": 2.0, "recovered": 3.0} for k in CONFIG}}
    (b / "sens_ranking.json").write_text(json.dumps(sens))
    (b / "cost_unknown.json").write_text(json.dumps({"bogus": 1.0}))
    outs = b / "outs"
    outs.mkdir()
    for stage in artifacts.STAGES:
        shutil.copyfile(artifacts.stage_path(artifacts.ZOO_DIR, "lenet5", stage), artifacts.stage_path(outs, "lenet5",
                                                                                                     stage))
    (outs / "lenet5_int8_eval.json").write_text(json.dumps({"model": "lenet5", "backend": "fbgemm", "images": 120,
                                                            "acc_int8": 20.0, "acc_qat": 20.0,
                                                            "top1_agreement": 90.0}))
    shutil.copytree(outs, b / "outs_badeval")
    (b / "outs_badeval" / "lenet5_int8_eval.json").write_text("{oops")
    shutil.copytree(outs, b / "outs_evalother")
    (b / "outs_evalother" / "lenet5_int8_eval.json").write_text(json.dumps({"model": "alexnet", "backend": "fbgemm",
                                                                         "images": 120, "acc_int8": 1.0,
                                                                         "acc_qat": 1.0, "top1_agreement": 90.0}))
    shutil.copytree(outs, b / "outs_misfit")
    blob = torch.load(artifacts.stage_path(artifacts.ZOO_DIR, "alexnet", "int8"), weights_only=False)
    torch.save({**blob, "model": "lenet5"}, b / "outs_misfit" / "lenet5_int8.pth")
    shutil.copytree(outs, b / "outs_noqat")
    (b / "outs_noqat" / "lenet5_qat_preconvert.pth").unlink()
    shutil.copytree(outs, b / "outs_truncstage")
    _truncated(LENET_TEACHER, b / "outs_truncstage" / "lenet5_int8.pth")
    for stage in artifacts.STAGES:
        _truncated(artifacts.stage_path(artifacts.ZOO_DIR, "lenet5", stage), artifacts.stage_path(b / "outs_trunc",
                                                                                                 "lenet5", stage))
    (b / "outs_wrong").mkdir()
    shutil.copyfile(LENET_TEACHER, b / "outs_wrong" / "alexnet_int8.pth")
    (b / "outs_foreign").mkdir()
    blob = torch.load(LENET_TEACHER, weights_only=False)
    torch.save({**blob, "state_dict": {"x": torch.zeros(1)}}, b / "outs_foreign" / "lenet5_int8.pth")
    blob = torch.load(artifacts.stage_path(artifacts.ZOO_DIR, "lenet5", "qat"), weights_only=False)
    torch.save({**blob, "backend": "tpu"}, b / "outs_foreign" / "lenet5_qat_preconvert.pth")
    (b / "zoo_badmanifest").mkdir()
    (b / "zoo_badmanifest" / "manifest.json").write_text("{broken")
    (b / "zoo_deepmanifest").mkdir()
    shutil.copyfile(b / "deep.json", b / "zoo_deepmanifest" / "manifest.json")
    (b / "zoo_manifest_dir" / "manifest.json").mkdir(parents=True)
    _truncated(LENET_TEACHER, b / "run_trunc" / "checkpoints" / "lenet5_float.ckpt")
    _garbage(b / "run_garbage" / "checkpoints" / "lenet5__ppo__0__result.search.ckpt")
    (b / "run_other" / "checkpoints").mkdir(parents=True)
    torch.save({"config": {"epochs": 99}}, b / "run_other" / "checkpoints" / "lenet5_float.ckpt")
    torch.save({"settings": {"strategy": "random"}}, b / "run_other" / "checkpoints" /
               "lenet5__ppo__0__result.search.ckpt")
    _truncated(LENET_TEACHER, b / "lsq_trunc" / "checkpoint.pt")
    meta = {"model": "tiny_vgg", "num_classes": 10, "small_input": True}
    torch.save({"kind": "float", "meta": meta, "model": {"bogus": torch.zeros(1)}}, b / "lsq_fake_float.pt")
    (b / "lsq_float").mkdir()
    shutil.copyfile(b / "lsq_fake_float.pt", b / "lsq_float" / "checkpoint.pt")
    torch.save({"format": "something else"}, b / "lsq_fake_int.pt")
    shutil.copytree(b / "lsq_float", b / "lsq_misfit")
    (b / "lsq_misfit" / "metrics.json").write_text(json.dumps({"test_acc": 50.0}))
    (b / "withdir" / "tri_ppo_int_codes" / "taken.out").mkdir(parents=True)
    (b / "withdir" / "reports" / "taken.out").mkdir(parents=True)
    (b / "withdir" / "lenet5_float_unfused.pth").mkdir()
    (b / "withdir" / "lenet5_int8_eval.json").mkdir()
    (b / "subfile").mkdir()
    (b / "subfile" / "checkpoints").write_text("a file where a folder goes\n")
    (b / "readonly").mkdir()
    os.chmod(b / "readonly", 0o555)
    (b / "broken.json").symlink_to(b / "missing.json")
    (b / "immutable").mkdir()
    (b / "immfile").mkdir()
    (b / "immfile" / "lenet5_int8_eval.json").write_text("{}")
    immutable = _chattr("+i", b / "immutable") and _chattr("+i", b / "immfile" / "lenet5_int8_eval.json")
    yield b, immutable
    if immutable:
        _chattr("-i", b / "immutable")
        _chattr("-i", b / "immfile" / "lenet5_int8_eval.json")
    os.chmod(b / "readonly", 0o755)


def _cifar_pickles(root: Path, label: int, classes: int = 10) -> None:
    """A cifar-10-batches-py folder of ``classes`` class names whose batches hold images of labels ``label`` and 0."""
    import pickle

    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {"data": [[0] * 3072] * 2, "labels": [label, 0]}
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(classes)]}))


def snapshot(roots: list[Path]) -> dict[str, tuple[int, int] | str]:
    """(size, mtime_ns) of every file and the names of every folder under ``roots``."""
    out: dict[str, tuple[int, int] | str] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            out[dirpath] = "dir"
            for name in filenames:
                p = os.path.join(dirpath, name)
                st = os.lstat(p)
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _fill(argv: list[str], b: Path) -> list[str]:
    return [a.replace("{bad}", str(b)) for a in argv]


def _call(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def check_fails_cleanly(argv: list[str], b: Path, immutable: bool, capsys: pytest.CaptureFixture[str],
                        monkeypatch: pytest.MonkeyPatch, expect: str, env: dict[str, str] | None = None) -> str:
    """Run ``argv``; assert exit 2, one error line containing ``expect``, no traceback, nothing written."""
    argv = _fill(argv, b)
    if not immutable and any("immutable" in a or "immfile" in a for a in argv):
        pytest.skip("chattr +i is not permitted here")
    monkeypatch.chdir(b / "cwd")
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value.replace("{bad}", str(b)))
    roots = [b, artifacts.ZOO_DIR, SAMPLE_ARCHIVE.parent, Path.home() / ".cache" / "triseg"]
    capsys.readouterr()
    before = snapshot(roots)
    code = _call(argv)
    err = capsys.readouterr().err
    after = snapshot(roots)
    lines = [line for line in re.split(r"[\r\n]+", err) if line.strip() and not PROGRESS.search(line)]
    errors = [line for line in lines if ERROR.match(line)]
    assert code == 2, err
    assert len(errors) == 1 and "Traceback" not in err, err
    assert all(ERROR.match(line) or line.startswith(("note: ", "warning: ")) for line in lines), err
    assert "unexpected" not in errors[0], errors[0]
    assert expect in errors[0], errors[0]
    changed = sorted(set(before.items()) ^ set(after.items()))
    assert not changed, f"files created or changed: {changed[:5]}"
    return errors[0]


@pytest.mark.parametrize("mode, extra, option", GENERATED)
def test_generated_bad_value_fails_cleanly(mode, extra, option, bad, capsys, monkeypatch):
    b, immutable = bad
    check_fails_cleanly([mode, *extra], b, immutable, capsys, monkeypatch, expect=option)


@pytest.mark.parametrize("argv, expect, env", RUNTIME)
def test_bad_input_fails_cleanly(argv, expect, env, bad, capsys, monkeypatch):
    b, immutable = bad
    check_fails_cleanly(argv, b, immutable, capsys, monkeypatch, expect, env)


def test_every_numeric_option_has_a_range():
    for mode, m in MODES.items():
        for f, tp in _fields(m.config):
            if _base(tp) in (int, float):
                assert f.metadata.get("check") is not None, f"{mode} {flag(f.name)} has no legal range"


def test_the_suite_covers_every_mode_and_enough_cases():
    modes = {p.values[0] for p in GENERATED} | {p.values[0][0] for p in RUNTIME if p.values[0]}
    assert set(MODES) <= modes
    assert len(GENERATED) + len(RUNTIME) >= 150


def test_legacy_front_end_fails_the_same_way(bad, capsys, monkeypatch):
    b, _ = bad
    monkeypatch.chdir(b / "cwd")
    before = snapshot([b])
    assert legacy_main(["--mode", "train_float", "--model", "lenet5", "--data-dir", str(b / "trunc.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: archive ") and err.count("\n") == 1 and snapshot([b]) == before


@pytest.mark.parametrize("argv, expect", [
    (["--mode", "train_float", "--model", "lenet5", "--data-dir", "{bad}/trunc.tar.gz"], "is damaged or truncated"),
    (["--mode", "search", "--model", "lenet5", "--workers", "100000"], "--workers"),
    (["--mode", "lsq-infer", "--int-model", "{bad}/garbage.pth"], "is damaged"),
], ids=["truncated-archive", "workers-100000", "garbage-int-model"])
def test_no_traceback_reaches_the_terminal(argv, expect, bad):
    b, _ = bad
    before = snapshot([b])
    proc = subprocess.run([sys.executable, str(ROOT / "main.py"), *_fill(argv, b)], cwd=b / "cwd",
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if not line.startswith(("note: ", "warning: "))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expect in lines[0], proc.stderr[-2000:]
    assert snapshot([b]) == before
