"""The public API as the README shows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from triseg import api

ROOT = Path(__file__).resolve().parents[1]


def readme_api_example() -> str:
    """The README's Python API block, as written."""
    found = re.search(r"## Python API\n.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert found, "README.md has no Python API example"
    return found.group(1)


def test_the_readme_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, one_thread) -> None:
    """Searched on validation, tested once, written and read back; fewer episodes than the README's."""
    code = readme_api_example()
    assert "episodes=1000" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("episodes=1000", "episodes=30"), "README.md", "exec"), {})
    result = api.SearchResult.read(tmp_path / "lenet5_cmaes.json")
    assert result.test is not None and result.test.acc_drop == pytest.approx(
        result.test.acc_teacher - result.test.acc_student)
    assert set(result.config) == {"conv1", "conv2", "fc1", "fc2"}
    with pytest.raises(api.TrisegError, match="already evaluated on the test split"):
        api.evaluate_test(result, api.load_teacher("lenet5"), api.load_data(api.SearchConfig(model="lenet5")))
