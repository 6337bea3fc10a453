"""The report mode and its figures, on LeNet-5 with the bundled sample."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from triseg.analysis.sensitivity import candidate_configs
from triseg.approx.config import LayerCodes
from triseg.approx.lut import map_codes
from triseg.cli import legacy_main, main
from triseg.report.figures import fig_hardware, fig_histogram, fig_search_curves, mapped_counts, png_bytes

from test_analysis import CONFIG, LAYERS, write_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ROOT = Path(__file__).resolve().parents[1]
# the cost model's counts of results/tmax_sweep/lenet5_ppo_p30.json on the test split (eval_ppo_int8)
HARDWARE = json.loads((ROOT / "results" / "hardware" / "lenet5_ppo_p30.eval.json").read_text())["hardware"]
OTHER = {"conv1": (4, 9, 16, 20, 31), "conv2": (7, 13, 17, 23, 36), "fc1": (9, 25, 33, 39, 50),
         "fc2": (9, 15, 18, 21, 52)}


def codes(layers: dict[str, tuple[int, ...]]) -> dict[str, dict[str, int]]:
    return {k: dict(zip(("t1", "v1", "t2", "v2", "tmax"), v)) for k, v in layers.items()}


@pytest.fixture
def search_run(tmp_path: Path) -> Path:
    """A fake search output dir: result JSON, history and a checkpoint whose top-k holds two configs."""
    out = tmp_path / "search"
    cands = [{"reward": -0.5, "episode": 7, "val_acc": 60.0, "val_drop": 9.0},
             {"reward": -0.6, "episode": 3, "val_acc": 58.0, "val_drop": 11.0}]
    cfg = write_config(out / "tri_ppo_int_codes" / "demo.json", CONFIG, search="ppo", seed=0, max_acc_drop=2.0,
                       selection="unconstrained-best (val drop=9.00% > 2.0%)", history_file="demo.history.json",
                       metrics={"acc_teacher": 70.0, "acc_student": 61.0, "acc_drop": 9.0},
                       validation={"acc_teacher": 69.0, "acc_student": 60.0, "acc_drop": 9.0, "candidates": cands},
                       coverage={"mapped_share": 0.5, "layers": {k: {"mapped_share": 0.5, "changed_share": 0.4,
                                                                      "zeroed_share": 0.1} for k in CONFIG}},
                       tmax={k: v[4] for k, v in CONFIG.items()}, hardware=HARDWARE)
    history = [{"episode": e, "reward": -1.0 + e / 100, "kd": 0.5, "at": 0.004, "best": -1.0 + e / 100}
               for e in range(12)]
    (out / "tri_ppo_int_codes" / "demo.history.json").write_text(json.dumps(history))
    (out / "checkpoints").mkdir()
    top = [{"reward": -0.6, "episode": 3, "score": {}, "config": codes(OTHER)},
           {"reward": -0.5, "episode": 7, "score": {}, "config": codes(CONFIG)}]
    torch.save({"top": top}, out / "checkpoints" / "lenet5__ppo__0__demo.search.ckpt")
    return cfg


def report(cfg: Path, out: Path, *extra: str) -> str:
    assert main(["report", "--model", "lenet5", "--workers", "1", "--output-dir", str(out), "--config-path",
                 str(cfg), "--max-images", "32", "--hist-batches", "1", *extra]) == 0
    return (out / "reports" / f"{cfg.stem}.html").read_text()


def test_mapped_counts_move_each_code_to_its_image():
    c = LayerCodes(4, 9, 16, 20, 31)
    counts = np.arange(256, dtype=np.float64)
    mapped = mapped_counts(counts, c)
    assert mapped.sum() == counts.sum()
    assert mapped[0] == counts[0:5].sum()
    assert mapped[c.v1] == counts[5:17].sum() and mapped[c.v2] == counts[17:32].sum()
    np.testing.assert_array_equal(mapped[32:], counts[32:])
    assert set(np.nonzero(mapped[:32])[0]) == {0, 9, 20}
    assert map_codes(torch.tensor([4, 5, 16, 17, 31, 32]), c).tolist() == [0, 9, 9, 20, 20, 32]
    assert png_bytes(fig_histogram("x", counts, c, "val (1 images)")).startswith(PNG_MAGIC)


def test_report_shows_every_layer_figures_and_candidates(search_run, tmp_path):
    html = report(search_run, tmp_path / "out")
    rows = re.findall(r"<tr><td class=\"l\">([^<]+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>"
                      r"<td>(\d+)</td>", html)
    assert {r[0]: tuple(map(int, r[1:])) for r in rows} == CONFIG
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == len(LAYERS) + 5  # histograms, search curves, drop/coverage, sensitivity, confusion, hardware
    assert all(base64.b64decode(i).startswith(PNG_MAGIC) for i in images)
    assert "src=\"http" not in html and "<script" not in html  # self-contained
    figs = tmp_path / "out" / "reports" / "demo_figures"
    assert sorted(p.name for p in figs.glob("*.png")) == sorted(
        [f"hist_{k}.png" for k in LAYERS] + ["search_curves.png", "drop_vs_coverage.png", "sensitivity.png",
                                             "confusion.png", "hardware.png"])
    assert "the 2 candidate configs" in html and "<td>yes</td>" in html
    assert "Notes" not in html  # history and checkpoint were found
    assert "val (32 images)" in html and "unconstrained-best" in html


def test_candidates_need_a_matching_checkpoint(search_run):
    result = json.loads(search_run.read_text())
    out = search_run.parent.parent
    configs, _ = candidate_configs(result, search_run, out)
    assert [c["conv1"].t1 for c in configs] == [5, 4]  # candidate order, matched by episode
    result["validation"]["candidates"][0]["reward"] = -0.4
    assert candidate_configs(result, search_run, out)[0] is None
    assert candidate_configs(result, search_run, out / "nowhere")[0] is None


def test_gradient_run_history_gives_candidates_and_curves(search_run):
    result = json.loads(search_run.read_text())
    history = {"epoch_configs": [codes(OTHER), codes(CONFIG)],
               "history": [{"step": i, "epoch": 1 + i // 3, "kd": 0.1 * i, "coverage": 0.4, "codes": {}}
                           for i in range(6)]}
    result["validation"]["candidates"] = [{"reward": 2.0, "episode": 2, "val_drop": 3.0},
                                          {"reward": 1.0, "episode": 1, "val_drop": 4.0}]
    configs, source = candidate_configs(result, search_run, Path("/nonexistent"), history)
    assert [c["conv1"].t1 for c in configs] == [5, 4] and "epochs" in source
    fig = fig_search_curves(history["history"], result["validation"]["candidates"], 0, 2.0)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles[:2] == ["kd", "coverage"] and "no per-episode val drop" in titles[2]
    assert png_bytes(fig).startswith(PNG_MAGIC)


def test_report_without_history_or_checkpoint_says_so(tmp_path, capsys):
    cfg = write_config(tmp_path / "lone.json", {"conv2": CONFIG["conv2"]}, history_file="missing.history.json")
    assert legacy_main(["--mode", "report", "--model", "lenet5", "--workers", "1", "--output-dir",
                        str(tmp_path / "out"), "--config-path", str(cfg), "--max-images", "32",
                        "--hist-batches", "1"]) == 0
    html = (tmp_path / "out" / "reports" / "lone.html").read_text()
    assert "<h2>Notes</h2>" in html and "no search curves" in html and "only the selected config" in html
    assert "this result has no hardware section" in html and "hardware cost per layer" not in html
    assert html.count("data:image/png;base64,") == 1 + 3
    assert ">conv2<" in html and ">conv1<" not in html


def test_report_reuses_a_matching_sensitivity_file_only(search_run, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["analyze_sensitivity", "--model", "lenet5", "--workers", "1", "--output-dir", str(out),
                 "--config-path", str(search_run), "--max-images", "24"]) == 0
    sens = out / "analysis" / "lenet5_int8" / "sensitivity_demo_val.json"
    html = report(search_run, out, "--sensitivity-file", str(sens))
    assert "Sensitivity drops are on val (24 images)" in html
    other = write_config(tmp_path / "other.json", {"conv1": CONFIG["conv1"]})
    assert main(["report", "--model", "lenet5", "--output-dir", str(out), "--config-path", str(other),
                 "--sensitivity-file", str(sens)]) == 2
    assert main(["report", "--model", "lenet5", "--output-dir", str(out), "--config-path", str(other),
                 "--run-dir", str(tmp_path / "nope")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert "is not for this config" in err[0] and "--run-dir" in err[1]


def test_hardware_bars_stack_the_json_shares_of_each_layer():
    ax = fig_hardware(HARDWARE).axes[0]
    assert [c.get_label() for c in ax.containers] == ["skipped (operand 0)", "selected (v1/v2: precomputed w*v)",
                                                       "multiplied (8-bit multiply)"]
    layers = list(HARDWARE["layers"].values())
    assert all(len(c.patches) == len(layers) for c in ax.containers)
    for i, layer in enumerate(layers):
        bars = [c.patches[i] for c in ax.containers]
        heights = [b.get_height() for b in bars]
        assert heights == pytest.approx([layer[f"{k}_share"] for k in ("skipped", "selected", "multiplied")])
        assert sum(heights) == pytest.approx(1.0, abs=1e-9)
        assert [b.get_y() for b in bars] == pytest.approx([0.0, heights[0], heights[0] + heights[1]])
    assert "test (8000 images)" in ax.get_title()
    assert [t.get_text().splitlines()[1] for t in ax.get_xticklabels()] == [
        f"from {layer['source'] or 'image / exact'}" for layer in layers]


def table_cells(html: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    row = re.search(r"<tr><td class=\"l\">" + re.escape(first) + r"</td>(.*?)</tr>", html)
    assert row is not None, first
    return re.findall(r"<td[^>]*>([^<]*)</td>", row.group(1))


def test_report_shows_the_hardware_cost_of_the_result(search_run, tmp_path):
    html = report(search_run, tmp_path / "out")
    section = html[html.index("<h2>Hardware cost (estimate)</h2>"):html.index("<h2>Per-layer config")]
    totals, total_macs = HARDWARE["totals"], sum(c["macs_per_image"] for c in HARDWARE["layers"].values())
    for name, c in HARDWARE["layers"].items():
        cells = table_cells(section, name)
        assert cells[2:] == [f"{round(c['macs_per_image'])}", f"{c['macs_per_image'] / total_macs:.3f}",
                             f"{c['skipped_share']:.3f}", f"{c['selected_share']:.3f}",
                             f"{c['multiplied_share']:.3f}", str(c["precomputed_products"])]
        assert sum(float(v) for v in cells[4:7]) == pytest.approx(1.0, abs=2e-3)
    assert table_cells(section, "multiplies left vs zero-skipping INT8 (the baseline that already skips zero "
                                "operands)") == [f"{totals['multiplies_left_vs_zero_skipping_int8']:.4f}"]
    assert table_cells(section, "multiplies left vs dense INT8") == [f"{totals['multiplies_left_vs_dense_int8']:.4f}"]
    energy = totals["energy_estimate_pj_per_image"]
    assert table_cells(section, "energy ratio, ESTIMATE: student / zero-skipping INT8 teacher") == [
        f"{energy['ratio']:.3f}"]
    assert "<b>estimate</b>" in section and "Horowitz, ISSCC 2014" in section and "test (8000 images)" in section
    card = re.search(r'<div class="v ">([^<]*)</div><div class="k">multiplies left vs zero-skipping INT8 \(test\)',
                     html)
    assert card is not None and card.group(1) == f"{totals['multiplies_left_vs_zero_skipping_int8']:.3f}"


def test_an_incomplete_hardware_section_is_named_not_fatal(search_run, tmp_path):
    result = json.loads(search_run.read_text())
    result["hardware"] = {"split": "test", "totals": {}}
    search_run.write_text(json.dumps(result))
    html = report(search_run, tmp_path / "out")
    assert "hardware section is incomplete" in html and "hardware cost per layer" not in html
