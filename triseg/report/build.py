"""Gather everything the report shows (evaluations, histograms, sensitivity, candidates) and render it."""

from __future__ import annotations

import time
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from torch import nn
from tqdm import tqdm

from triseg.analysis.acts import sample_batches
from triseg.analysis.sensitivity import candidate_configs, history_path, layer_sensitivity, read_history
from triseg.approx.calibrate import collect_histograms
from triseg.approx.config import TrisegConfig
from triseg.approx.student import evaluate_student
from triseg.data import Split, normalize
from triseg.report import figures as F
from triseg.report.html import Page, Section, cards, figure, fmt, note, table

EXPLAIN = (
    "<p class=\"explain\">triseg replaces, at each approximated layer of an INT8 network, the activation "
    "codes (code = quantized value &minus; zero point) by a <b>tri-segment map</b> with five codes: "
    "codes in (0,&nbsp;t1] become 0, codes in (t1,&nbsp;t2] become v1, codes in (t2,&nbsp;tmax] become v2; "
    "zero, negative codes and codes above tmax stay as they are. The INT8 network without maps is the "
    "<i>teacher</i>; with the maps it is the <i>student</i>. A search (PPO by default) picked the codes to "
    "keep the student close to the teacher; the top-k configs it found were ranked on the validation split "
    "and the selected one was tested once on the test split. <b>Mapped share</b> = activations whose code lies "
    "in (0,&nbsp;tmax]; <b>changed</b> = activations the map altered; <b>zeroed</b> = non-zero activations "
    "set to 0. Drops are in accuracy points (teacher &minus; student).</p>")


@dataclass
class ReportInputs:
    """What the report is about and where its evaluations run."""

    model: nn.Module
    config: TrisegConfig
    result: dict[str, Any]
    config_file: Path
    search_dir: Path
    split: Split
    split_name: str
    classes: list[str]
    batch_size: int
    hist_batches: int
    seed: int
    sensitivity: dict[str, Any] | None
    teacher: dict[str, Any] | None = None
    other_teacher: str | None = None


def build_report(inp: ReportInputs, figures_dir: Path) -> str:
    """Evaluate, draw every figure (inlined, and as PNG files in ``figures_dir`` once the whole page is made,
    so that a report failing half-way writes nothing), return the HTML page."""
    cfg, res, layers = inp.config, inp.result, list(inp.config.layers)
    label, short = f"{inp.split_name} ({len(inp.split)} images)", inp.split_name
    notes: list[str] = [] if inp.other_teacher is None else [inp.other_teacher]
    teacher = evaluate_student(inp.model, {}, inp.split, inp.batch_size)
    student = evaluate_student(inp.model, cfg.layers, inp.split, inp.batch_size)
    sens = inp.sensitivity or layer_sensitivity(inp.model, cfg.layers, inp.split, inp.batch_size)
    sens_label = (label if inp.sensitivity is None
                  else f"{inp.sensitivity['split']} ({inp.sensitivity['images']} images)")

    pngs: dict[str, bytes] = {}

    def draw(name: str, fig: Any) -> bytes:
        pngs[name] = F.png_bytes(fig)
        return pngs[name]

    # code histograms of the teacher on the report split
    taps = {layer: inp.model.tap_name(layer) for layer in layers}
    idx = sample_batches(inp.split, inp.batch_size, inp.hist_batches, inp.seed)
    hists = collect_histograms(inp.model, list(taps.values()), (normalize(inp.split.x[i]) for i in idx), len(idx))
    hist_images = sum(len(i) for i in idx)
    hist_imgs = {layer: draw(f"hist_{layer}", F.fig_histogram(layer, hists[taps[layer]].counts.numpy(),
                                                               cfg.layers[layer], f"{short} ({hist_images} images)"))
                 for layer in layers}

    # search curves
    hist_file = history_path(res, inp.config_file, inp.search_dir)
    history = None if hist_file is None else read_history(hist_file)
    cands = res.get("validation", {}).get("candidates", [])
    cand_cfgs, cand_note = candidate_configs(res, inp.config_file, inp.search_dir, history)
    selected = None
    if cand_cfgs is not None:
        selected = next((i for i, c in enumerate(cand_cfgs) if c == cfg.layers), None)
    rows = history.get("history") if isinstance(history, dict) else history
    curves = None
    if hist_file is None:
        notes.append(f"search history {res.get('history_file')!r} not found beside the config or under "
                     f"{inp.search_dir}: no search curves")
    elif not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        notes.append(f"{hist_file} holds no per-episode rows: no search curves")
    else:
        curves = draw("search_curves", F.fig_search_curves(rows, cands, selected, res.get("max_acc_drop")))

    # drop against coverage for every candidate config (evaluated here, on the report split)
    if cand_cfgs is not None:
        evals = [evaluate_student(inp.model, c, inp.split, inp.batch_size)
                 for c in tqdm(cand_cfgs, desc="candidates", leave=False, mininterval=2.0)]
        cov = [e.mapped_share for e in evals]
        drops = [teacher.accuracy - e.accuracy for e in evals]
        rewards = [c["reward"] for c in cands]
        cand_table = (f"<details><summary>the {len(cands)} candidate configs</summary>" + table(
            ["rank", "episode", "reward", "val drop (search result)", f"drop ({short}, here)",
             f"mapped share ({short}, here)", "selected"],
            [[str(i + 1), c["episode"], c["reward"], c["val_drop"], d, s, "yes" if i == selected else ""]
             for i, (c, d, s) in enumerate(zip(cands, drops, cov))], digits=3) + "</details>")
    else:
        cand_table = ""
        notes.append(f"only the selected config is plotted against coverage: {cand_note}")
        cov, drops, rewards, selected = [student.mapped_share], [teacher.accuracy - student.accuracy], None, 0
    scatter = draw("drop_vs_coverage", F.fig_drop_vs_coverage(cov, drops, rewards, selected,
                                                              res.get("max_acc_drop"), label))
    confusion = draw("confusion", F.fig_confusion(teacher.predictions.numpy(), student.predictions.numpy(),
                                                  inp.classes, label))
    sens_img = draw("sensitivity", F.fig_sensitivity(sens))

    hardware, hw_missing = hardware_section(res)
    hw_img = None if hardware is None else draw("hardware", F.fig_hardware(hardware))
    if hw_missing:
        notes.append(hw_missing)

    m, v = res.get("metrics", {}), res.get("validation", {})
    drop_here = teacher.accuracy - student.accuracy
    agree = 100.0 * float(teacher.predictions.eq(student.predictions).float().mean())
    page = Page(f"triseg report: {cfg.model} ({cfg.backend}) - {inp.config_file.stem}",
                f"config {inp.config_file} | {len(layers)} approximated layers | "
                + ("" if inp.teacher is None else f"teacher {inp.teacher['file']} (sha256 {inp.teacher['sha256'][:12]}"
                   + (", NOT the search's" if inp.other_teacher else "") + ") | ")
                + f"generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    limit = res.get("max_acc_drop")
    test_drop = m.get("acc_drop")
    summary = cards([
        ("test accuracy drop (points)", fmt_opt(test_drop), "bad" if limit is not None and test_drop is not None
         and test_drop > limit else "good"),
        ("student test accuracy", fmt_opt(m.get("acc_student"), "%"), ""),
        ("teacher test accuracy", fmt_opt(m.get("acc_teacher"), "%"), ""),
        ("mapped share (test)", fmt_opt(res.get("coverage", {}).get("mapped_share"), digits=3), ""),
        (f"drop on {label}", f"{drop_here:.2f}", ""),
        *([] if hardware is None else [(
            f"multiplies left vs zero-skipping INT8 ({hardware['split']})",
            f"{hardware['totals']['multiplies_left_vs_zero_skipping_int8']:.3f}", "")]),
    ])
    rows = [
        ["test (from the search result)", m.get("acc_teacher"), m.get("acc_student"), m.get("acc_drop"),
         res.get("test_top1_agreement_with_teacher"), res.get("split_sizes", {}).get("test")],
        ["validation (from the search result)", v.get("acc_teacher"), v.get("acc_student"), v.get("acc_drop"),
         None, res.get("split_sizes", {}).get("val")],
        [f"{label} (evaluated for this report)", teacher.accuracy, student.accuracy, drop_here, agree,
         len(inp.split)],
    ]
    settings = {k: res[k] for k in ("search", "episodes", "student_evaluations", "seed", "batch_size",
                                    "calib_batches", "kd_T", "attention_weight", "max_acc_drop",
                                    "search_wall_time_s", "selection_wall_time_s", "data") if k in res}
    page.sections.append(Section("Summary", EXPLAIN + summary + table(
        ["split", "teacher acc %", "student acc %", "drop (points)", "top-1 agreement %", "images"], rows)
        + f"<p>Selection: <code>{escape(str(res.get('selection', '?')))}</code></p>"
        + "<p class=\"kv\">Search settings: " + " &middot; ".join(
            f"{escape(k)} <b>{fmt(val)}</b>" for k, val in settings.items()) + "</p>"))

    page.sections.append(Section("Hardware cost (estimate)", note(hw_missing) if hardware is None
                                 else hardware_html(hardware, hw_img)))

    test_cov = res.get("coverage", {}).get("layers", {})
    tmax_rule = res.get("tmax", {})
    rank = {layer: i + 1 for i, layer in enumerate(sens["ranking"])}
    layer_rows = []
    for layer in layers:
        c, tc = cfg.layers[layer], test_cov.get(layer, {})
        sc, sl = student.coverage[layer], sens["layers"].get(layer, {})
        layer_rows.append([layer, c.t1, c.v1, c.t2, c.v2, c.tmax, tmax_rule.get(layer), tc.get("mapped_share"),
                           tc.get("changed_share"), tc.get("zeroed_share"), sc["mapped_share"], sc["changed_share"],
                           sc["zeroed_share"], sl.get("drop_only"), sl.get("drop_all_but"), rank.get(layer)])
    page.sections.append(Section("Per-layer config, coverage and sensitivity", table(
        ["layer", "t1", "v1", "t2", "v2", "tmax", "tmax rule", "mapped (test)", "changed (test)", "zeroed (test)",
         f"mapped ({short})", f"changed ({short})", f"zeroed ({short})",
         "drop only this", "drop all but this", "harm rank"], layer_rows, digits=3)
        + _findings(sens)
        + f"<p>Coverage over all approximated activations: mapped share "
          f"{fmt_opt(res.get('coverage', {}).get('mapped_share'), digits=3)} on test (search result), "
          f"{student.mapped_share:.3f} on {escape(label)}. <i>tmax rule</i> = p90 of the non-zero "
          f"calibration codes + 10, the search's upper bound for tmax. Sensitivity drops are on "
          f"{escape(sens_label)}; rank 1 = most harmful alone.</p>"))

    figs = [figure(hist_imgs[layer],
                   f"<b>{escape(layer)}</b>: left, the teacher's code histogram on {escape(short)} "
                   f"({hist_images} images, log scale) coloured by the segment each code falls in, with the "
                   f"t1/t2/tmax boundaries; right, the same activations after the map (v1/v2 marked). "
                   f"Changed on {escape(label)}: {student.coverage[layer]['changed_share']:.1%} of the "
                   f"activations (with every layer mapped).", f"code histogram {layer}") for layer in layers]
    page.sections.append(Section("Code histograms", "".join(figs)))
    body = []
    if curves is not None:
        body.append(figure(curves, f"Curves from <code>{escape(hist_file.name)}</code>: per-episode (or per-step) "
                                   "values (light) with a running mean; for a search, red = best reward so far. "
                                   "Last panel: validation drop &mdash; the run logs none per episode, so the "
                                   "top-k configs' val drops (measured after the search) are plotted at the "
                                   "episode (epoch) recorded with each; red star = the selected config.",
                           "search curves"))
    body.append(figure(scatter, "Accuracy drop against mapped share on "
                                f"{escape(label)} for every config the selection evaluated (the search's "
                                "top-k), coloured by search reward; red star = selected. Configs further right "
                                "approximate more activations.", "drop against coverage") + cand_table)
    body.append(figure(sens_img, "Per-layer sensitivity: red = accuracy drop with only that layer approximated; "
                                 "grey = with every layer but that one (lower grey = approximating that layer "
                                 "costs more in combination); dashed = all layers.", "sensitivity"))
    body.append(figure(confusion, f"Teacher vs student predictions on {escape(label)}: the diagonal is "
                                  "agreement; off-diagonal cells show which classes the maps push images into.",
                       "confusion"))
    page.sections.append(Section("Search and evaluation figures", "".join(body)))
    if notes:
        page.sections.append(Section("Notes", "".join(note(n) for n in notes)))
    html = page.render()
    for name, data in pngs.items():
        F.save_png(data, figures_dir / f"{name}.png")
    return html


HW_LAYER_KEYS = ("kind", "source", "macs_per_image", "skipped_share", "selected_share", "multiplied_share",
                 "precomputed_products")
HW_TOTAL_KEYS = ("macs_per_image", "multiplies_left_vs_zero_skipping_int8", "multiplies_left_vs_dense_int8",
                 "multiplies_per_image", "selects_per_image", "skips_per_image", "teacher_multiplies_per_image",
                 "precomputed_products", "comparisons_per_image", "energy_estimate_pj_per_image")


def hardware_section(res: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The result's ``hardware`` section (the cost model's counts), or None and why it cannot be shown."""
    hw = res.get("hardware")
    if hw is None:
        return None, ("this result has no hardware section (it predates the cost model): no hardware cost shown; "
                      "eval_ppo_int8 --config-path on it prints the counts on test")
    layers, totals = (hw.get("layers"), hw.get("totals")) if isinstance(hw, dict) else (None, None)
    if not (isinstance(layers, dict) and layers and all(isinstance(c, dict) and all(k in c for k in HW_LAYER_KEYS)
                                                         for c in layers.values())
            and isinstance(totals, dict) and all(k in totals for k in HW_TOTAL_KEYS)
            and all(k in hw for k in ("split", "images", "energy_table"))):
        return None, "the result's hardware section is incomplete or from another version: no hardware cost shown"
    return hw, None


def hardware_html(hw: dict[str, Any], png: bytes) -> str:
    """The stacked per-layer bar, the per-layer table and the totals of a result's hardware section."""
    t, layers, energy = hw["totals"], hw["layers"], hw["totals"]["energy_estimate_pj_per_image"]
    split = f"{hw['split']} ({hw['images']} images)"
    total_macs = sum(float(c["macs_per_image"]) for c in layers.values()) or 1.0
    layer_table = table(
        ["layer", "kind", "operand from tap", "MACs per image", "share of all MACs", "skipped", "selected",
         "multiplied", "precomputed products"],
        [[name, c["kind"], c["source"] or "(image / unapproximated)", int(round(float(c["macs_per_image"]))),
          float(c["macs_per_image"]) / total_macs, c["skipped_share"], c["selected_share"], c["multiplied_share"],
          c["precomputed_products"]] for name, c in layers.items()], left=3, digits=3)
    totals = table(["total", "value"], [
        ["multiplies left vs zero-skipping INT8 (the baseline that already skips zero operands)",
         f"{t['multiplies_left_vs_zero_skipping_int8']:.4f}"],
        ["multiplies left vs dense INT8", f"{t['multiplies_left_vs_dense_int8']:.4f}"],
        ["MACs per image (dense INT8)", f"{t['macs_per_image']:.0f}"],
        ["multiplies per image: student / zero-skipping INT8 teacher",
         f"{t['multiplies_per_image']:.0f} / {t['teacher_multiplies_per_image']:.0f}"],
        ["selects per image (precomputed product chosen)", f"{t['selects_per_image']:.0f}"],
        ["skips per image (zero operand)", f"{t['skips_per_image']:.0f}"],
        ["precomputed products to store (two per weight of a consuming layer)", f"{t['precomputed_products']}"],
        ["comparisons per image (3 per activation at each approximated tap: t1, t2, tmax)",
         f"{t['comparisons_per_image']:.0f}"],
        ["energy per image, ESTIMATE: student / zero-skipping INT8 teacher (pJ)",
         f"{energy['student']:.0f} / {energy['teacher_zero_skipping']:.0f}"],
        ["energy ratio, ESTIMATE: student / zero-skipping INT8 teacher", f"{energy['ratio']:.3f}"],
    ])
    table_src = hw["energy_table"]
    ops = ", ".join(f"{escape(k)} {fmt(v, 3)}" for k, v in table_src.items() if k not in ("unit", "source"))
    return (f"<p class=\"explain\">What the multipliers see, counted by the cost model on {escape(split)} at the "
            "input of every conv and linear layer of the student: an operand that is 0 is <b>skipped</b>, one of "
            "the producing tap's two segment values v1/v2 is <b>selected</b> (a precomputed product w&middot;v), "
            "anything else is <b>multiplied</b>. An operand from the image or an unapproximated layer can only "
            "be skipped. The energy figures are an <b>estimate</b> from a per-operation table "
            f"({ops} {escape(str(table_src.get('unit', '')))}; source: {escape(str(table_src.get('source', '?')))}), "
            "not a measurement.</p>"
            + figure(png, f"Per layer, the shares of its MACs skipped, selected and multiplied on {escape(split)}; "
                          "under each bar the tap its operands come from and the layer's share of all MACs.",
                     "hardware cost per layer")
            + layer_table + totals)


def _findings(sens: dict[str, Any]) -> str:
    """One sentence naming the layer that hurts most alone and the one whose exactness recovers most."""
    worst = sens["ranking"][0]
    lay = sens["layers"]
    rec = max(lay, key=lambda k: lay[k]["recovered"])
    return (f"<p><b>Where it hurts:</b> {escape(worst)} costs the most on its own "
            f"({lay[worst]['drop_only']:.2f} points with only it approximated); leaving {escape(rec)} exact "
            f"recovers the most ({lay[rec]['recovered']:.2f} of the {sens['drop_full']:.2f} points lost with "
            f"every layer approximated).</p>")


def fmt_opt(value: Any, suffix: str = "", digits: int = 2) -> str:
    """A number with ``digits`` decimals and a suffix, or a dash when missing."""
    return "-" if not isinstance(value, (int, float)) else f"{value:.{digits}f}{suffix}"
