"""The report's figures (matplotlib, headless): code histograms, search curves, sensitivity,
teacher-vs-student confusion, accuracy drop against coverage. Each function returns a Figure."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from triseg.approx.config import LayerCodes
from triseg.approx.lut import map_codes
from triseg.paths import atomic_open

SEGMENT_COLORS = {"zero": "#9e9e9e", "v1": "#1f77b4", "v2": "#ff7f0e", "rest": "#5f6b7a"}


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()


def save_png(data: bytes, path: Path) -> None:
    """Write PNG bytes to ``.<name>.<pid>.tmp`` beside ``path``, then rename."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def mapped_counts(counts: np.ndarray, c: LayerCodes) -> np.ndarray:
    """The histogram after the map: each code's count moved to the code it maps to."""
    target = map_codes(torch.arange(len(counts)), c).clamp(0, len(counts) - 1).numpy()
    out = np.zeros(len(counts), dtype=np.float64)
    np.add.at(out, target, counts)
    return out


def fig_histogram(layer: str, counts: np.ndarray, c: LayerCodes, split_label: str) -> Figure:
    """Original code histogram with the t1/t2/tmax lines, and the mapped histogram with v1/v2 marked."""
    counts = np.asarray(counts, dtype=np.float64)
    positive = np.nonzero(counts[1:])[0]
    last = int(positive[-1]) + 1 if len(positive) else c.tmax
    xmax = min(len(counts) - 1, max(c.tmax + 12, int(last * 1.05) + 1))
    codes = np.arange(xmax + 1)
    fig = Figure(figsize=(11, 3.4))
    ax0, ax1 = fig.subplots(1, 2, sharey=True)
    colors = np.array([SEGMENT_COLORS["rest"]] * (xmax + 1), dtype=object)
    colors[(codes > 0) & (codes <= c.t1)] = SEGMENT_COLORS["zero"]
    colors[(codes > c.t1) & (codes <= c.t2)] = SEGMENT_COLORS["v1"]
    colors[(codes > c.t2) & (codes <= c.tmax)] = SEGMENT_COLORS["v2"]
    ax0.bar(codes, counts[:xmax + 1], width=1.0, color=list(colors), linewidth=0)
    for row, (x, name) in enumerate(((c.t1, "t1"), (c.t2, "t2"), (c.tmax, "tmax"))):
        ax0.axvline(x + 0.5, color="black", linestyle="--", linewidth=0.9)
        ax0.text(x + 0.5, 1.01 + 0.065 * row, f"{name}={x}", transform=ax0.get_xaxis_transform(), ha="center",
                 va="bottom", fontsize=8)
    ax0.set_title(f"{layer}: teacher codes, {split_label}", fontsize=10, pad=44)
    mapped = mapped_counts(counts, c)
    ax1.bar(codes, mapped[:xmax + 1], width=1.0, color=SEGMENT_COLORS["rest"], linewidth=0)
    for row, (value, name) in enumerate(((0, "0"), (c.v1, "v1"), (c.v2, "v2"))):
        color = SEGMENT_COLORS["zero" if name == "0" else name]
        ax1.bar([value], [mapped[value]], width=1.0, color=color, linewidth=0)
        if name != "0":
            ax1.plot([value], [mapped[value]], marker="v", color=color, markersize=9, markeredgecolor="black",
                     clip_on=False, linestyle="none")
            ax1.text(value, 1.01 + 0.065 * (row - 1), f"{name}={value}", transform=ax1.get_xaxis_transform(),
                     ha="center", va="bottom", fontsize=8, color=color)
    ax1.axvline(c.tmax + 0.5, color="black", linestyle=":", linewidth=0.9)
    ax1.set_title(f"{layer}: after the map (codes above tmax={c.tmax} unchanged)", fontsize=10, pad=44)
    for ax in (ax0, ax1):
        ax.set_yscale("log")
        ax.set_xlim(-1, xmax + 1)
        ax.set_xlabel("INT8 code (q - zero point)")
    ax0.set_ylabel("activations")
    handles = [Patch(color=SEGMENT_COLORS[k], label=lbl) for k, lbl in
               (("zero", "(0, t1] -> 0"), ("v1", "(t1, t2] -> v1"), ("v2", "(t2, tmax] -> v2"),
                ("rest", "unchanged"))]
    ax0.legend(handles=handles, loc="upper right", fontsize=8)
    return fig


def _rolling(y: np.ndarray, window: int) -> np.ndarray:
    window = max(1, min(window, len(y)))
    c = np.cumsum(np.insert(y, 0, 0.0))
    head = c[1:window] / np.arange(1, window)
    return np.concatenate([head, (c[window:] - c[:-window]) / window])


SEARCH_KEYS = ("episode", "reward", "kd", "at", "best")
SEARCH_PANELS = (("reward", "reward = -(KD + w * AT)"), ("kd", "KD loss"), ("at", "attention-transfer loss"))


def _scalar(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def fig_search_curves(rows: list[dict[str, Any]], candidates: Sequence[dict[str, Any]],
                      selected: int | None, max_acc_drop: float | None) -> Figure:
    """Per-episode curves from a run's history rows, and the validation drop.

    Search histories (episode, reward, kd, at, best) give reward with best-so-far, KD loss and
    attention loss; any other history (e.g. a gradient-descent run's per-step rows) gives one panel
    per numeric key. The last panel plots a per-episode ``val_drop`` when the rows have one;
    otherwise the top-k candidates' val drop (measured after the search) at the episode or epoch
    recorded with each of them.
    """
    search = all(k in rows[0] for k in SEARCH_KEYS)
    x_key = next((k for k in ("episode", "step") if k in rows[0]), None)
    panels = SEARCH_PANELS if search else tuple(
        (k, k) for k, v in rows[0].items() if _scalar(v) and k not in (x_key, "epoch", "val_drop"))
    x = np.array([r[x_key] for r in rows] if x_key else np.arange(len(rows)), dtype=np.float64)
    n = len(panels) + 1
    fig = Figure(figsize=(11, 3.2 * ((n + 1) // 2)))
    axes = fig.subplots((n + 1) // 2, 2, squeeze=False).flatten()
    window = max(1, len(rows) // 30)
    for ax, (key, title) in zip(axes, panels):
        y = np.array([r.get(key, np.nan) for r in rows], dtype=np.float64)
        if window > 1:
            ax.plot(x, y, color="#9ecae1", linewidth=0.7, label=f"per {x_key or 'row'}")
        ax.plot(x, _rolling(y, window), color="#08519c", linewidth=1.4,
                label=f"mean of {window}" if window > 1 else f"per {x_key or 'row'}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(x_key or "logged row")
    if search:
        axes[0].plot(x, [r["best"] for r in rows], color="#d62728", linewidth=1.4, label="best so far")
        axes[0].legend(fontsize=8, loc="lower right")
    ax = axes[len(panels)]
    per_row = "val_drop" in rows[0]
    if per_row:
        ax.plot(x, [r["val_drop"] for r in rows], color="#2ca02c")
        ax.set_title(f"validation accuracy drop per {x_key or 'row'}", fontsize=10)
        ax.set_xlabel(x_key or "logged row")
    elif candidates:
        cx = [c["episode"] for c in candidates]
        cy = [c["val_drop"] for c in candidates]
        ax.scatter(cx, cy, s=18, color="#2ca02c", label="top-k candidate")
        if selected is not None:
            ax.scatter([cx[selected]], [cy[selected]], s=140, marker="*", color="#d62728", zorder=3,
                       label="selected")
        ax.set_title("val drop of the top-k configs, measured after the search, placed at the\n"
                     "episode (epoch) recorded with each; no per-episode val drop is logged", fontsize=9)
        ax.set_xlabel("episode (epoch) of the candidate")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no validation data in the result", ha="center", va="center", transform=ax.transAxes)
    if max_acc_drop is not None and (candidates or per_row):
        ax.axhline(max_acc_drop, color="black", linestyle="--", linewidth=0.9)
        ax.text(0.01, max_acc_drop, f" --max-acc-drop {max_acc_drop:g}", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize=8)
    ax.set_ylabel("points")
    for extra in axes[n:]:
        extra.set_visible(False)
    fig.tight_layout()
    return fig


def fig_sensitivity(sens: dict[str, Any]) -> Figure:
    """Grouped bars per layer (ranked by harm): drop with only the layer, drop with all but the layer."""
    order = sens["ranking"]
    only = [sens["layers"][k]["drop_only"] for k in order]
    all_but = [sens["layers"][k]["drop_all_but"] for k in order]
    x = np.arange(len(order))
    fig = Figure(figsize=(max(6.0, 0.7 * len(order) + 3), 3.8))
    ax = fig.subplots()
    ax.bar(x - 0.2, only, width=0.4, color="#d62728", label="only this layer approximated")
    ax.bar(x + 0.2, all_but, width=0.4, color="#7f7f7f", label="every layer but this one")
    ax.axhline(sens["drop_full"], color="black", linestyle="--", linewidth=0.9,
               label=f"all layers ({sens['drop_full']:.2f})")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, order, rotation=30 if len(order) > 6 else 0, ha="right" if len(order) > 6 else "center")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title("per-layer sensitivity, most harmful first", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig


def fig_confusion(teacher: np.ndarray, student: np.ndarray, classes: Sequence[str], split_label: str) -> Figure:
    """Counts of (teacher prediction, student prediction) pairs, log colour scale."""
    n = len(classes)
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(teacher), np.asarray(student)), 1)
    agree = 100.0 * np.trace(m) / max(1, m.sum())
    fig = Figure(figsize=(6.4, 5.6))
    ax = fig.subplots()
    cmap = matplotlib.colormaps["Blues"].copy()
    cmap.set_bad("white")
    shown = np.where(m > 0, m, np.nan)
    im = ax.imshow(shown, cmap=cmap, norm=LogNorm(vmin=1, vmax=max(2, m.max())))
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() ** 0.75 else "black")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("student prediction")
    ax.set_ylabel("teacher prediction")
    ax.set_title(f"teacher vs student, {split_label}: top-1 agreement {agree:.2f}%", fontsize=10)
    ticks = [t for t in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if t <= max(2, m.max())]
    fig.colorbar(im, ax=ax, shrink=0.8, label="images (log scale)", ticks=ticks, format="%d")
    fig.tight_layout()
    return fig


def fig_drop_vs_coverage(coverage: Sequence[float], drop: Sequence[float], reward: Sequence[float] | None,
                         selected: int | None, max_acc_drop: float | None, split_label: str) -> Figure:
    """Validation accuracy drop against mapped share for each evaluated config; the selected one starred."""
    fig = Figure(figsize=(6.8, 4.4))
    ax = fig.subplots()
    if reward is not None:
        sc = ax.scatter(coverage, drop, c=reward, cmap="viridis", s=28, label="evaluated config")
        fig.colorbar(sc, ax=ax, label="search reward")
    else:
        ax.scatter(coverage, drop, s=28, color="#1f77b4", label="evaluated config")
    if selected is not None:
        ax.scatter([coverage[selected]], [drop[selected]], s=220, marker="*", color="#d62728", edgecolor="black",
                   zorder=3, label="selected")
    if max_acc_drop is not None:
        ax.axhline(max_acc_drop, color="black", linestyle="--", linewidth=0.9, label=f"--max-acc-drop {max_acc_drop:g}")
    ax.set_xlabel("mapped share (activations with code in (0, tmax])")
    ax.set_ylabel("accuracy drop (points)")
    ax.set_title(f"accuracy drop against coverage, {split_label}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


HW_PARTS = (("skipped", "skipped (operand 0)", "#9e9e9e"), ("selected", "selected (v1/v2: precomputed w*v)", "#1f77b4"),
            ("multiplied", "multiplied (8-bit multiply)", "#d62728"))


def hardware_shares(layers: dict[str, dict[str, Any]]) -> list[tuple[str, list[float]]]:
    """Per conv/linear layer (forward order): its skipped, selected and multiplied shares of MACs."""
    return [(name, [float(c[f"{part}_share"]) for part, _, _ in HW_PARTS]) for name, c in layers.items()]


def fig_hardware(hardware: dict[str, Any]) -> Figure:
    """One stacked bar per conv/linear layer: the shares of its MACs skipped, selected and multiplied (the
    cost model's counts at the layer's input, from a result's ``hardware`` section)."""
    layers = hardware["layers"]
    rows = hardware_shares(layers)
    total = sum(float(c["macs_per_image"]) for c in layers.values()) or 1.0
    x = np.arange(len(rows))
    fig = Figure(figsize=(max(6.5, 1.1 * len(rows) + 3.5), 4.2))
    ax = fig.subplots()
    bottom = np.zeros(len(rows))
    for i, (part, label, color) in enumerate(HW_PARTS):
        heights = np.array([shares[i] for _, shares in rows])
        ax.bar(x, heights, bottom=bottom, width=0.6, color=color, label=label)
        bottom += heights
    ticks = [f"{name}\nfrom {layers[name]['source'] or 'image / exact'}\n"
             f"{float(layers[name]['macs_per_image']) / total:.0%} of MACs" for name, _ in rows]
    ax.set_xticks(x, ticks, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of the layer's MACs")
    ax.set_title(f"MACs at the input of each conv/linear layer, {hardware['split']} ({hardware['images']} images)",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return fig
