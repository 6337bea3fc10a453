"""The comparison entry point: options given after --extra reach every run (the tmax rule included)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from triseg import api

ROOT = Path(__file__).resolve().parents[1]


def test_search_compare_honours_the_tmax_rule_and_no_test(tmp_path, sample) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "search_compare.py"), "--model", "lenet5",
                           "--budget", "6", "--seeds", "0", "--strategies", "random", "exact-mse", "--points", "2",
                           "--out", str(tmp_path / "cmp"), "--output-dir", str(tmp_path / "none"), "--extra",
                           "--tmax-percentile", "30", "--calib-batches", "2", "--top-k", "2", "--no-test"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    teacher = api.load_teacher("lenet5", tmp_path / "none", device="cpu")
    cfg = api.SearchConfig(model="lenet5", space=api.SpaceOptions(calib_batches=2, tmax_percentile=30))
    expected = api.build_space(teacher, sample, cfg.space, cfg.batch_size, 0).tmax
    default = api.build_space(teacher, sample, api.SpaceOptions(calib_batches=2), cfg.batch_size, 0).tmax
    assert expected != default, "the sample must tell the two rules apart"
    for name in ("random", "exact-mse"):
        result = json.loads((tmp_path / "cmp" / "lenet5" / f"{name}__seed0.json").read_text())
        assert result["tmax"] == expected and result["tmax_rule"]["percentile"] == 30.0
        assert "metrics" not in result and result["coverage"]["split"] == "val"
    table = (tmp_path / "cmp" / "lenet5" / "table.md").read_text()
    assert "`random`" in table and "not evaluated" in table and "(val)" in table


def test_benchmarks_use_only_the_public_api() -> None:
    offenders = []
    for path in sorted((ROOT / "benchmarks").glob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if (text.startswith("from triseg") or text.startswith("import triseg")) and \
                    not text.startswith(("from triseg import api", "from triseg.api import")):
                offenders.append(f"{path.name}:{number}: {text}")
    assert offenders == []


def test_cli_modules_are_imported_only_by_the_cli() -> None:
    offenders = []
    for path in sorted((ROOT / "triseg").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "triseg").parts[:1] or path.name in ("api.py", "__main__.py"):
            continue
        lines = path.read_text().splitlines()
        if any(line.strip().startswith(("from triseg.cli", "import triseg.cli")) for line in lines):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
