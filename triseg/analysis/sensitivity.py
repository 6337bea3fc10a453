"""Where approximation hurts: per-layer sensitivity of a config, and the coverage of a search's candidates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from triseg.approx.config import LayerCodes
from triseg.approx.student import Config, evaluate_student
from triseg.data import Split
from triseg.errors import TrisegError
from triseg.paths import read_json
from triseg.search.result import RESULT_DIR, RunPaths


def layer_sensitivity(model: nn.Module, config: Config, split: Split, batch_size: int = 256) -> dict[str, Any]:
    """Drop (points) with only layer i approximated and with every layer but i; ranked by harm.

    The ranking orders layers by ``drop_only`` (the harm of the layer on its own), ties broken by
    ``recovered`` = full drop - ``drop_all_but`` (what leaving the layer exact gives back).
    """
    teacher = evaluate_student(model, {}, split, batch_size)
    full = evaluate_student(model, config, split, batch_size)
    drop_full = teacher.accuracy - full.accuracy
    layers: dict[str, dict[str, float]] = {}
    for layer in tqdm(list(config), desc="sensitivity", leave=False, mininterval=2.0):
        only = evaluate_student(model, {layer: config[layer]}, split, batch_size)
        rest = {k: v for k, v in config.items() if k != layer}
        all_but = evaluate_student(model, rest, split, batch_size) if rest else teacher
        drop_all_but = teacher.accuracy - all_but.accuracy
        layers[layer] = {"drop_only": teacher.accuracy - only.accuracy, "drop_all_but": drop_all_but,
                         "recovered": drop_full - drop_all_but,
                         "changed_share_only": only.coverage[layer]["changed_share"]}
    ranking = sorted(layers, key=lambda k: (-layers[k]["drop_only"], -layers[k]["recovered"]))
    return {"acc_teacher": teacher.accuracy, "acc_student": full.accuracy, "drop_full": drop_full,
            "layers": layers, "ranking": ranking}


def search_output_dir(config_file: Path, run_dir: str | None) -> Path:
    """The search's --output-dir: ``run_dir`` if given, else the folder above ``tri_ppo_int_codes/``."""
    if run_dir is not None:
        return Path(run_dir)
    parent = config_file.resolve().parent
    return parent.parent if parent.name == RESULT_DIR else parent


def history_path(result: dict[str, Any], config_file: Path, out_dir: Path) -> Path | None:
    """The per-episode history JSON named by the result, beside it or under ``out_dir``."""
    name = result.get("history_file")
    if not isinstance(name, str):
        return None
    for p in (config_file.parent / name, out_dir / RESULT_DIR / name, out_dir / name):
        if p.exists():
            return p
    return None


def read_history(path: Path) -> Any:
    """The history JSON; a one-line error when it is not JSON."""
    return read_json(path, "history file")


def _codes(config: dict[str, dict[str, int]]) -> Config:
    return {k: LayerCodes(**v) for k, v in config.items()}


def candidate_configs(result: dict[str, Any], config_file: Path, out_dir: Path,
                      history: Any = None) -> tuple[list[Config] | None, str]:
    """Configs of the result's validation candidates, in candidate order.

    The result JSON stores each candidate's reward, episode and val numbers but not its codes. A
    gradient-descent run's history lists them as ``epoch_configs`` (candidate episode = epoch,
    1-based); a search's final checkpoint holds its top-k. Returns (configs, where from), or
    (None, why not) when neither is there or the source does not match the result.
    """
    cands = result.get("validation", {}).get("candidates", [])
    if not cands:
        return None, "the result lists no validation candidates"
    if isinstance(history, dict) and isinstance(history.get("epoch_configs"), list):
        epochs = history["epoch_configs"]
        if all(isinstance(c["episode"], int) and 1 <= c["episode"] <= len(epochs) for c in cands):
            return [_codes(epochs[c["episode"] - 1]) for c in cands], "candidate configs from the history's epochs"
    ckpt = RunPaths(out_dir, result["model"], str(result.get("search", "ppo")), int(result.get("seed", 0)),
                    config_file.name).checkpoint
    if not ckpt.exists():
        return None, f"search checkpoint {ckpt} not found (pass --run-dir, the search's --output-dir)"
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        top = {s["episode"]: s for s in state["top"]}
    except Exception as exc:
        raise TrisegError(f"{ckpt} is not a readable search checkpoint ({type(exc).__name__})") from None
    configs = []
    for cand in cands:
        entry = top.get(cand["episode"])
        if entry is None or abs(entry["reward"] - cand["reward"]) > 1e-9:
            return None, f"search checkpoint {ckpt} does not match the result's candidates (a later run?)"
        configs.append(_codes(entry["config"]))
    return configs, f"candidate configs from {ckpt}"
