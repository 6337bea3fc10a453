"""Benchmark scripts: sweep_match.py tells same maps from other maps; benchmarks and library stay on the public API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from triseg import sweep

ROOT = Path(__file__).resolve().parents[1]


def test_sweep_match_tells_same_maps_from_other_maps(tmp_path, sample) -> None:
    spec_path = tmp_path / "spec.toml"
    spec_path.write_text(f"""output = "{tmp_path / 'sweep'}"
models = ["lenet5"]
strategies = ["random", "exact-mse"]
seeds = [0]
budgets = [3]
options = ["--top-k", "2", "--calib-batches", "1", "--batch-size", "16"]
""")
    spec = sweep.load_spec(spec_path)
    sweep.run_sweep(spec, use_ray=False)
    committed = tmp_path / "committed"
    committed.mkdir()
    exact = sweep.finished(next(c for c in spec.cells if "exact-mse" in c.name))
    assert exact.config != sweep.finished(next(c for c in spec.cells if "random" in c.name)).config
    for strategy in ("random", "exact-mse"):  # the layout search_compare.py wrote: <strategy>__seed<seed>.json
        exact.write(committed / f"{strategy}__seed0.json")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sweep_match.py"), str(spec_path),
                           str(committed)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-800:]
    report = json.loads((tmp_path / "sweep" / "match.json").read_text())
    verdicts = {row["cell"].split("__")[1]: (row["match"], row["same_maps"]) for row in report["rows"]}
    assert verdicts == {"random": (False, False), "exact-mse": (True, True)} and report["same"] == 1


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
