"""Analysis modes: activation dumps, variance, code percentiles, per-layer sensitivity, the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from triseg import artifacts, quant
from triseg.analysis.acts import activation_stats, dump_activations, sample_batches
from triseg.analysis.sensitivity import layer_sensitivity, search_output_dir
from triseg.analysis.stats import PERCENTILES, code_percentiles, weight_stats
from triseg.approx.calibrate import collect_histograms
from triseg.approx.config import TrisegConfig, config_path
from triseg.approx.schema import SENSITIVITY_SCHEMA, check
from triseg.artifacts import atomic_write_text
from triseg.artifacts import write_json
from triseg.cli.common import backend, prepare
from triseg.cli.modes import Mode
from triseg.data import Cifar10, Split, normalize
from triseg.errors import TrisegError
from triseg.jobs import (DumpConfig, DumpFloatConfig, ModelOptions, PercentilesConfig, ReportConfig, SampleOptions,
                         SensitivityConfig, VarianceConfig)
from triseg.models.base import TapModel
from triseg.paths import check_output_dir, check_output_file, read_json
from triseg.report.build import ReportInputs, build_report
from triseg.search.job import load_data
from triseg.teacher import Teacher, load_result_teacher


def _split(data: Cifar10, name: str, max_images: int | None = None) -> Split:
    split = {"train": data.train, "val": data.val, "test": data.test}[name].take(max_images)
    if len(split) == 0:
        raise TrisegError(f"the {name} split is empty (see --val-size / --data-dir)")
    return split


def _load_stage(args: SampleOptions, stage: str) -> tuple[TapModel, str | None]:
    """The float or INT8 model in eval mode; the INT8 backend engine is set."""
    if stage == "float":
        return artifacts.load_float(args.output_dir, args.model), None
    model, be = artifacts.load_int8(args.output_dir, args.model, args.engine)
    backend(args.backend, be)
    return model, be


def _analysis_dir(args: ModelOptions, stage: str) -> Path:
    return Path(args.output_dir) / "analysis" / f"{args.model}_{stage}"


def _dump(args: DumpConfig, stage: str) -> None:
    prepare(args)
    model, be = _load_stage(args, stage)
    data = load_data(args)
    split = _split(data, args.split)
    idx = sample_batches(split, args.batch_size, args.num_batches, args.seed)
    out = Path(args.output_dir) / "activations" / f"{args.model}_{stage}"
    layers = dump_activations(model, split, idx, out, codes=stage == "int8")
    files = [f"batch_{b:05d}.npz" for b in range(len(idx))]
    for stale in out.glob("batch_*.npz"):
        if stale.name not in files:
            stale.unlink()
    manifest = {"model": args.model, "stage": stage, "backend": be, "split": args.split, "seed": args.seed,
                "batch_size": args.batch_size, "num_batches": len(idx), "images": sum(len(i) for i in idx),
                "data": data.source, "files": files,
                "content": ("per layer: int16 codes (q - zero point) plus '<layer>.scale' and '<layer>.zero_point'"
                            if stage == "int8" else "per layer: float32 activation values")
                + "; 'indices' = image indices in the split, 'labels' = their labels",
                "layers": layers}
    path = write_json(manifest, out / "manifest.json")
    print(f"{args.model} {stage}: {len(layers)} taps x {manifest['images']} {args.split} images "
          f"in {len(files)} files -> {path}")


def dump_acts_float(args: DumpFloatConfig) -> None:
    _dump(args, "float")


def dump_acts_int8(args: DumpConfig) -> None:
    _dump(args, "int8")


def analyze_variance(args: VarianceConfig) -> None:
    prepare(args)
    model, be = _load_stage(args, args.stage)
    data = load_data(args)
    split = _split(data, args.split)
    idx = sample_batches(split, args.batch_size, args.num_batches, args.seed)
    head = {"model": args.model, "stage": args.stage, "backend": be}
    weights, skipped = weight_stats(model, model.layers())
    acts = activation_stats(model, split, idx)
    out = _analysis_dir(args, args.stage)
    wpath = write_json({**head, "layers": weights, "skipped": skipped}, out / "weight_variance.json")
    apath = write_json({**head, "split": args.split, "images": sum(len(i) for i in idx), "seed": args.seed,
                        "unit": "dequantized value" if be else "float value", "layers": acts},
                       out / "activation_variance.json")
    print(f"{'layer':<16}{'w std':>10}{'act mean':>10}{'act std':>10}{'act max':>10}{'zeros':>8}")
    for layer, a in acts.items():
        w = weights.get(layer, {}).get("std")
        print(f"{layer:<16}{'-' if w is None else f'{w:.4f}':>10}{a['mean']:>10.4f}{a['std']:>10.4f}"
              f"{a['max']:>10.4f}{a['zero_share']:>8.3f}")
    print(f"-> {wpath}, {apath}")


def collect_percentiles(args: PercentilesConfig) -> None:
    prepare(args)
    model, be = _load_stage(args, "int8")
    data = load_data(args)
    split = _split(data, args.split)
    idx = sample_batches(split, args.batch_size, args.num_batches, args.seed)
    taps = {layer: model.tap_name(layer) for layer in model.layers()}
    hists = collect_histograms(model, list(taps.values()), (normalize(split.x[i]) for i in idx), len(idx))
    top = quant.activation_top_code(be)
    layers = {layer: {"tap": tap, **code_percentiles(hists[tap], top)} for layer, tap in taps.items()}
    path = write_json({"model": args.model, "backend": be, "split": args.split, "seed": args.seed,
                       "batch_size": args.batch_size, "num_batches": len(idx),
                       "images": sum(len(i) for i in idx), "top_code": top,
                       "rule": "tmax = min(top_code, p90 of the non-zero codes + 10)", "layers": layers},
                      _analysis_dir(args, "int8") / "percentiles.json")
    names = [f"p{q:g}" for q in PERCENTILES]
    print(f"{'layer':<16}" + "".join(f"{n:>7}" for n in names) + f"{'tmax':>7}")
    for layer, info in layers.items():
        print(f"{layer:<16}" + "".join(f"{info['percentiles'][n]:>7}" for n in names) + f"{info['tmax_rule']:>7}")
    print(f"-> {path}")


def _result_teacher(args: SensitivityConfig, run_dir: str | None = None) -> tuple[Teacher, TrisegConfig, str | None]:
    """The teacher the result was searched on (from the search's own output folder first), its checked config
    and the note of --allow-other-teacher."""
    return load_result_teacher(args.config_path, args.model, args.output_dir,
                               search_output_dir(config_path(args.config_path), run_dir), args.engine, args.device,
                               args.backend, args.allow_other_teacher)


def analyze_sensitivity(args: SensitivityConfig) -> None:
    prepare(args)
    stem = config_path(args.config_path).stem
    out = check_output_file(_analysis_dir(args, "int8") / f"sensitivity_{stem}_{args.split}.json")
    teacher, cfg, other = _result_teacher(args)
    model, be = teacher.model, teacher.backend
    split = _split(load_data(args), args.split, args.max_images)
    sens = layer_sensitivity(model, cfg.layers, split, args.batch_size)
    path = write_json({"model": args.model, "backend": be, "config": args.config_path, "split": args.split,
                       "images": len(split), "teacher": teacher.identity(),
                       **({"other_teacher": other} if other else {}), **sens}, out)
    print(f"{args.model} on {len(split)} {args.split} images: teacher {sens['acc_teacher']:.2f}% "
          f"all layers {sens['acc_student']:.2f}% (drop {sens['drop_full']:.2f})")
    print(f"{'rank':<6}{'layer':<16}{'drop only':>11}{'drop all but':>14}{'recovered':>11}")
    for i, layer in enumerate(sens["ranking"], 1):
        s = sens["layers"][layer]
        print(f"{i:<6}{layer:<16}{s['drop_only']:>11.2f}{s['drop_all_but']:>14.2f}{s['recovered']:>11.2f}")
    print(f"-> {path}")


def _read_sensitivity(path: str, model: str, layers: list[str]) -> dict[str, Any]:
    p = Path(path)
    sens = read_json(p, "sensitivity file", "run analyze_sensitivity again")
    if not isinstance(sens, dict) or sens.get("model") != model or not isinstance(sens.get("layers"), dict) \
            or sorted(sens["layers"]) != sorted(layers):
        raise TrisegError(f"sensitivity file {p} is not for this config ({model}: {', '.join(layers)})")
    check(sens, SENSITIVITY_SCHEMA, f"sensitivity file {p}", "file with the numbers the report needs",
          "run analyze_sensitivity again")
    if sorted(sens["ranking"]) != sorted(layers):
        raise TrisegError(f"sensitivity file {p} ranks {sens['ranking']}, not the config's layers: run "
                          f"analyze_sensitivity again")
    return sens


def report(args: ReportConfig) -> None:
    prepare(args)
    cfile = config_path(args.config_path)
    out_dir = Path(args.output_dir) / "reports"
    name = args.report_file or f"{cfile.stem}.html"
    check_output_file(out_dir / name)
    check_output_dir(out_dir / f"{Path(name).stem}_figures")
    teacher, cfg, other = _result_teacher(args, args.run_dir)
    model = teacher.model
    result = cfg.to_json()
    sens = None if args.sensitivity_file is None else _read_sensitivity(args.sensitivity_file, args.model,
                                                                        list(cfg.layers))
    data = load_data(args)
    split = _split(data, args.split, args.max_images)
    inputs = ReportInputs(model=model, config=cfg, result=result, config_file=cfile,
                          search_dir=search_output_dir(cfile, args.run_dir), split=split,
                          split_name=args.split, classes=data.classes,
                          batch_size=args.batch_size, hist_batches=args.hist_batches, seed=args.seed,
                          sensitivity=sens, teacher=teacher.identity(), other_teacher=other)
    html = build_report(inputs, out_dir / f"{Path(name).stem}_figures")
    atomic_write_text(html, out_dir / name)
    print(f"report of {cfile} ({len(cfg.layers)} layers, {len(split)} {args.split} images) -> {out_dir / name}")


MODES = [
    Mode("dump_acts_float", "save float activations at every tap -> activations/<model>_float/*.npz + manifest.json",
         DumpFloatConfig, dump_acts_float),
    Mode("dump_acts_int8", "save INT8 codes, scale and zero point at every tap -> activations/<model>_int8/",
         DumpConfig, dump_acts_int8),
    Mode("analyze_variance", "weight and activation mean/std/variance/min/max/zero share per layer "
         "-> analysis/<model>_<stage>/{weight,activation}_variance.json", VarianceConfig, analyze_variance),
    Mode("collect_percentiles", "per-layer percentiles of the non-zero INT8 codes and the p90 + 10 tmax "
         "-> analysis/<model>_int8/percentiles.json (defaults match the search's calibration)", PercentilesConfig,
         collect_percentiles),
    Mode("analyze_sensitivity", "per layer, the drop with only that layer approximated and with all but it, "
         "ranked by harm -> analysis/<model>_int8/sensitivity_<config>_<split>.json", SensitivityConfig,
         analyze_sensitivity),
    Mode("report", "one self-contained HTML report of a search result -> reports/<config stem>.html", ReportConfig,
         report),
]
