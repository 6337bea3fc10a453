"""Export: ONNX in onnxruntime, QONNX in qonnx and the C header agree with the torch INT8 student."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import triseg.cli
from triseg import artifacts, quant
from triseg.approx.config import LayerCodes
from triseg.approx.student import install
from triseg.cli import export as export_cli
from triseg.cli.parser import parse_options
from triseg.data import batches
from triseg.errors import TrisegError
from triseg.export import ExportRequest, export
from triseg.export.onnx_graph import GraphBuilder, ONNX_OPS, build, gather_tap, to_bytes
from triseg.export.qonnx_graph import thresholds
from triseg.export.structure import trace
from triseg.export.verify import ort_runner, ort_session, verify
from triseg.jobs import ExportConfig
from triseg.models import MODELS, build_model
from triseg.recorder import attach
from triseg.teacher import load_teacher

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")
pytest.importorskip("qonnx", reason="the export extra is not installed: pip install -e '.[export]'")

ROOT = Path(__file__).resolve().parents[1]
LENET_CONFIG = str(ROOT / "results/tmax_sweep/lenet5_ppo_p30.json")
ALEXNET_CONFIG = str(ROOT / "results/tmax_sweep/alexnet_ppo_p70.json")
ANY_MAP = LayerCodes(3, 6, 10, 16, 25)


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs torch on one thread (onnxruntime gets threads=1 explicitly)."""


@pytest.fixture(scope="module")
def lenet_fbgemm():
    """The zoo's LeNet-5 on fbgemm's kernels, whose arithmetic the integer export reproduces."""
    teacher = load_teacher("lenet5", artifacts.ZOO_DIR, engine="fbgemm", device="cpu")
    quant.set_engine("fbgemm")
    return teacher


def _map(code: int, c: LayerCodes) -> int:
    """The tri-segment map written out independently of the library."""
    if 0 < code <= c.t1:
        return 0
    if c.t1 < code <= c.t2:
        return c.v1
    if c.t2 < code <= c.tmax:
        return c.v2
    return code


def _expected_table(c: LayerCodes, zero_point: int) -> np.ndarray:
    return np.array([min(255, max(0, _map(q - zero_point, c) + zero_point)) for q in range(256)], dtype=np.uint8)


def _cli(argv: list[str], monkeypatch) -> int:
    """``triseg`` / ``main.py`` with the export modes in the registry (until triseg/cli/modes.py lists them)."""
    registry = triseg.cli.all_modes
    monkeypatch.setattr(triseg.cli, "all_modes", lambda: {**registry(), **{m.name: m for m in export_cli.MODES}})
    return triseg.cli.legacy_main(argv) if argv[0] == "--mode" else triseg.cli.main(argv)


def test_lenet5_student_onnx_gives_the_torch_codes_at_every_tap(lenet_fbgemm, sample, tmp_path, monkeypatch):
    out = tmp_path / "lenet5_p30.onnx"
    assert _cli(["--mode", "export_triseg", "--model", "lenet5", "--output-dir", str(artifacts.ZOO_DIR),
                 "--config-path", LENET_CONFIG, "--output", str(out), "--debug-taps"], monkeypatch) == 0
    quant.set_engine("fbgemm")
    config = lenet_fbgemm.load_config(LENET_CONFIG)
    x, _ = next(batches(sample.test, 64))
    recorder = install(lenet_fbgemm.model, config.layers, keep=None)
    with torch.no_grad():
        ref = lenet_fbgemm.model(x).numpy()
    attach(lenet_fbgemm.model, None)
    for optimize in (False, True):
        got = ort_runner(ort_session(str(out), threads=1, optimize=optimize))(x.numpy())
        assert np.array_equal(got["logits"], ref)
        for layer in lenet_fbgemm.layers():
            torch_codes = recorder.records[lenet_fbgemm.model.tap_name(layer)].raw.int_repr().numpy()
            assert np.array_equal(got[f"codes.{layer}"], torch_codes), layer
    report = verify(lenet_fbgemm, config, out, sample.test, 50, threads=1)
    for run in report["runs"].values():
        assert run["images"] == len(sample.test) and run["top1_agreement"] == 100.0
        assert run["identical_logits"] == 100.0 and run["accuracy_runtime"] == run["accuracy_torch"]
        assert len(run["equal_codes"]) == 2 * len(config.layers)
        assert set(run["equal_codes"].values()) == {100.0}
    assert report["file_ops"]["Gather"] == len(config.layers) and report["file_ops"]["ConvInteger"] == 2


@pytest.mark.parametrize("zero_point", [0, 5, 130])
def test_table_lookup_in_onnxruntime_equals_the_map_at_every_segment_boundary(zero_point):
    c = LayerCodes(t1=4, v1=7, t2=12, v2=20, tmax=30)
    b = GraphBuilder()
    onnx = b.onnx
    y = gather_tap(b, "q", "layer", c, zero_point)
    graph = onnx.helper.make_graph(b.nodes, "tap", [onnx.helper.make_tensor_value_info("q", onnx.TensorProto.UINT8,
                                                                                       [256])],
                                   [onnx.helper.make_tensor_value_info(y, onnx.TensorProto.UINT8, [256])],
                                   b.initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    q = np.arange(256, dtype=np.uint8)
    got = ort_session(to_bytes(model), threads=1, optimize=False).run(None, {"q": q})[0]
    assert np.array_equal(got, _expected_table(c, zero_point))
    codes = q.astype(int) - zero_point
    boundaries = {-1: -1, 0: 0, 1: 0, 4: 0, 5: 7, 12: 7, 13: 20, 30: 20, 31: 31}
    for code, mapped in boundaries.items():
        if 0 <= code + zero_point <= 255:
            assert int(got[code + zero_point]) - zero_point == mapped, (code, zero_point)
    assert np.array_equal(got[codes > 30], q[codes > 30]) and np.array_equal(got[codes <= 0], q[codes <= 0])


@pytest.mark.parametrize("codes,zero_point", [(LayerCodes(2, 6, 10, 13, 15), 0), (LayerCodes(10, 40, 60, 127, 127), 0),
                                              (ANY_MAP, 7), (LayerCodes(3, 5, 9, 200, 250), 40)])
def test_multithresholds_reproduce_the_map_on_all_256_codes(codes, zero_point):
    from qonnx.custom_op.general.multithreshold import multithreshold

    th, bias = thresholds(codes, zero_point)
    assert th.shape[0] == 1 and np.all(np.diff(th[0]) >= 0)
    q = np.arange(256, dtype=np.float32).reshape(1, 1, 256)
    got = multithreshold(q, th, out_scale=1.0, out_bias=bias).reshape(256)
    assert np.array_equal(got.astype(np.int64), _expected_table(codes, zero_point).astype(np.int64))


def test_qonnx_student_in_execute_onnx_agrees_with_torch(lenet_fbgemm, sample, tmp_path):
    config = lenet_fbgemm.load_config(LENET_CONFIG)
    out = export(ExportRequest(lenet_fbgemm, config, LENET_CONFIG, debug_taps=True), "qonnx", tmp_path / "l.onnx")
    report = verify(lenet_fbgemm, config, out, sample.test.take(40), 20, threads=1)
    run = report["runs"]["qonnx"]
    assert report["file_ops"]["qonnx.custom_op.general.MultiThreshold"] == len(config.layers)
    assert "Gather" not in report["file_ops"]
    assert run["images"] == 40 and run["top1_agreement"] == 100.0 and run["identical_logits"] == 100.0
    assert set(run["equal_codes"].values()) == {100.0}


@pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed")
def test_c_header_compiles_and_its_tables_equal_the_map(lenet_fbgemm, tmp_path):
    config = lenet_fbgemm.load_config(LENET_CONFIG)
    notes = {"conv1": ["cost model: 4704 comparators, 0 multipliers"]}
    header = export(ExportRequest(lenet_fbgemm, config, LENET_CONFIG, layer_notes=notes), "c-header",
                    tmp_path / "lenet5_maps.h")
    text = header.read_text()
    assert "cost model: 4704 comparators" in text and "mapped " in text
    flags = ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror"]
    subprocess.run(["gcc", "-fsyntax-only", *flags, str(header)], check=True)
    program = tmp_path / "dump.c"
    program.write_text('#include <stdio.h>\n#include "lenet5_maps.h"\nint main(void) {\n'
                       "  for (int l = 0; l < TRISEG_LENET5_NUM_LAYERS; l++) {\n"
                       "    const triseg_lenet5_layer_t *m = &TRISEG_LENET5_LAYERS[l];\n"
                       '    printf("%s %.9g %d %d %d %d %d %d", m->name, m->scale, m->zero_point, m->t1, m->v1, m->t2, '
                       "m->v2, m->tmax);\n"
                       '    for (int q = 0; q < 256; q++) printf(" %d", m->table[q]);\n    printf("\\n");\n  }\n'
                       "  return 0;\n}\n")
    subprocess.run(["gcc", *flags, str(program), "-o", str(tmp_path / "dump")], check=True)
    lines = subprocess.run([str(tmp_path / "dump")], check=True, capture_output=True, text=True).stdout.splitlines()
    graph = trace(lenet_fbgemm.model, "lenet5")
    assert [line.split()[0] for line in lines] == list(config.layers)
    for line in lines:
        name, scale, zp, *rest = line.split()
        c = config.layers[name]
        assert [int(v) for v in rest[:5]] == [c.t1, c.v1, c.t2, c.v2, c.tmax]
        tap_scale, tap_zp = graph.tap_qparams(name)
        assert np.float32(float(scale)) == np.float32(tap_scale) and int(zp) == tap_zp
        assert np.array_equal(np.array(rest[5:], dtype=np.uint8), _expected_table(c, int(zp)))


@pytest.mark.parametrize("ops", ONNX_OPS)
def test_every_lowering_runs_in_onnxruntime_and_integer_is_exact(ops, lenet_fbgemm, sample):
    config = lenet_fbgemm.load_config(LENET_CONFIG)
    model, _ = build(trace(lenet_fbgemm.model, "lenet5"), config.layers, ops)
    x, _ = next(batches(sample.test, 120))
    install(lenet_fbgemm.model, config.layers)
    with torch.no_grad():
        ref = lenet_fbgemm.model(x).numpy()
    attach(lenet_fbgemm.model, None)
    got = ort_runner(ort_session(to_bytes(model), threads=1, optimize=False))(x.numpy())["logits"]
    assert (got.argmax(1) == ref.argmax(1)).mean() >= (1.0 if ops == "integer" else 0.95)
    if ops == "integer":
        assert np.array_equal(got, ref)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_registered_model_exports_and_matches_its_int8_model(name, sample):
    torch.manual_seed(0)
    model = artifacts.prepare_for_qat(build_model(name), "fbgemm")
    with torch.no_grad():
        model(next(batches(sample.train, 32))[0])
    int8 = quant.convert(model.eval(), "fbgemm")
    config = {layer: ANY_MAP for layer in int8.layers()}
    graph = trace(int8, name)
    assert set(graph.taps) == set(int8.layers())
    onnx_model, _ = build(graph, config, "integer", debug_taps=True)
    x, _ = next(batches(sample.test, 4))
    got = ort_runner(ort_session(to_bytes(onnx_model), threads=1, optimize=True))(x.numpy())
    recorder = install(int8, config, keep=None)
    with torch.no_grad():
        ref = int8(x).numpy()
    attach(int8, None)
    assert np.array_equal(got["logits"], ref)
    last = int8.layers()[-1]
    assert np.array_equal(got[f"codes.{last}"], recorder.records[int8.tap_name(last)].raw.int_repr().numpy())


def _bad_config(tmp_path: Path) -> str:
    obj = json.loads(Path(LENET_CONFIG).read_text())
    obj["layers"]["conv9"] = obj["layers"]["conv1"]
    path = tmp_path / "configs" / "lenet5_conv9.json"
    path.parent.mkdir()
    path.write_text(json.dumps(obj))
    return str(path)


def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = tmp_path / "out" / "x.onnx"
    base = ["export", "--model", "lenet5", "--output-dir", str(artifacts.ZOO_DIR), "--workers", "1"]
    cases = {
        "--format 'tflite' is unknown": ["--format", "tflite", "--output", str(out)],
        "is for model alexnet, not lenet5": ["--config-path", ALEXNET_CONFIG, "--output", str(out)],
        "['conv9'] are not approximated layers": ["--config-path", _bad_config(tmp_path), "--output", str(out)],
        "is a file, not a folder": ["--config-path", LENET_CONFIG, "--output", str(blocker / "x.onnx")],
        "is a folder, not a file": ["--output", str(tmp_path)],
        "pass --config-path": ["--format", "c-header", "--output", str(out)],
    }
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    for message, extra in cases.items():
        assert _cli(base + extra, monkeypatch) == 2, message
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not out.parent.exists()


def test_verify_export_mode_reports_and_refuses_a_file_of_another_config(lenet_fbgemm, tmp_path, monkeypatch,
                                                                         capsys):
    teacher_file = export(ExportRequest(lenet_fbgemm), "onnx", tmp_path / "teacher.onnx")
    base = ["verify-export", "--model", "lenet5", "--output-dir", str(artifacts.ZOO_DIR), "--onnx", str(teacher_file),
            "--workers", "1", "--engine", "fbgemm", "--max-images", "16", "--batch-size", "8"]
    assert _cli(base + ["--config-path", LENET_CONFIG], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds the maps of no config" in err[0]
    report_file = tmp_path / "report.json"
    assert _cli(base + ["--ort-optimization", "off", "--report-file", str(report_file)], monkeypatch) == 0
    assert "ort_opt_off: top-1 agreement 100.000 %" in capsys.readouterr().out
    report = json.loads(report_file.read_text())
    assert list(report["runs"]) == ["ort_opt_off"] and not report["debug_outputs"] and report["images"] == 16
    assert report["runs"]["ort_opt_off"]["identical_logits"] == 100.0 and "optimised_ops" not in report


def _tampered(model, meta: dict[str, str] | None = None, renamed_input: str | None = None, drop_nodes: bool = False):
    """A copy of an exported model with some metadata replaced, its input renamed or its nodes removed."""
    model = copy.deepcopy(model)
    for prop in model.metadata_props:
        key = prop.key.removeprefix("triseg.")
        if meta and key in meta:
            prop.value = meta[key]
    if renamed_input:
        old = model.graph.input[0].name
        model.graph.input[0].name = renamed_input
        for node in model.graph.node:
            node.input[:] = [renamed_input if name == old else name for name in node.input]
    if drop_nodes:
        del model.graph.node[:]
    return model


@pytest.mark.parametrize("tamper, message", [
    (dict(meta={"teacher": "[1, 2]"}), "its triseg.teacher metadata is not a JSON object"),
    (dict(meta={"layers": "{oops"}), "its triseg.layers metadata is not a JSON object"),
    (dict(renamed_input="x"), "takes ['x'] and gives ['logits']"),
    (dict(drop_nodes=True), "is not a valid ONNX model (Graph output"),
], ids=["teacher-list", "layers-garbage", "input-renamed", "no-nodes"])
def test_a_tampered_export_is_one_line(tamper, message, lenet_fbgemm, tmp_path, monkeypatch, capsys):
    onnx = pytest.importorskip("onnx")
    good = onnx.load(str(export(ExportRequest(lenet_fbgemm), "onnx", tmp_path / "teacher.onnx")))
    onnx.save(_tampered(good, **tamper), str(tmp_path / "bad.onnx"))
    argv = ["verify-export", "--model", "lenet5", "--output-dir", str(artifacts.ZOO_DIR), "--onnx",
            str(tmp_path / "bad.onnx"), "--workers", "1", "--max-images", "8"]
    assert _cli(argv, monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0] and "unexpected" not in err[0], err


def test_missing_extra_is_a_one_line_error_naming_the_install_command(lenet_fbgemm, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(TrisegError, match=r"pip install -e '\.\[export\]'"):
        export(ExportRequest(lenet_fbgemm), "onnx", tmp_path / "t.onnx")
    assert _cli(["export", "--model", "lenet5", "--output", str(tmp_path / "t.onnx")], monkeypatch) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install -e '.[export]'" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_export_options_are_generated_and_checked():
    cfg = parse_options(ExportConfig, ["--model", "alexnet", "--format", "qonnx", "--debug-taps"])
    assert (cfg.model, cfg.format, cfg.debug_taps, cfg.config_path, cfg.onnx_ops) == ("alexnet", "qonnx", True, None,
                                                                                     "integer")
    with pytest.raises(TrisegError, match="--onnx-ops applies only with --format onnx"):
        ExportConfig(model="lenet5", format="qonnx", onnx_ops="qdq")
    with pytest.raises(TrisegError, match="--debug-taps applies only with --format onnx, qonnx"):
        ExportConfig(model="lenet5", format="c-header", config_path=LENET_CONFIG, debug_taps=True)
    assert {m.name for m in export_cli.MODES} == {"export", "export_triseg", "verify-export"}


def test_an_operation_the_exporter_does_not_know_is_a_one_line_error(lenet_fbgemm):
    class Sigmoid(type(lenet_fbgemm.model)):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sigmoid(super().forward(x))

    model = copy.deepcopy(lenet_fbgemm.model)
    model.__class__ = Sigmoid
    with pytest.raises(TrisegError, match="export: operation sigmoid in lenet5 is not supported"):
        trace(model, "lenet5")
    graph = trace(lenet_fbgemm.model, "lenet5")
    assert [n.kind for n in graph.nodes].count("tap") == 4 and set(graph.taps) == set(lenet_fbgemm.layers())
