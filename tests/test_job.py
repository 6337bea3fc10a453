"""The search job: --no-test never opens the test split, final_test evaluates once, results round-trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triseg import api
from triseg.cli import main
from triseg.data import Cifar10, Split
from triseg.search.legal import decode

pytestmark = pytest.mark.usefixtures("one_thread")


class Sealed:
    """A stand-in for the test tensors: its size may be read, its contents never."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getattr__(self, name: str):
        raise AssertionError(f"the test split was opened ({name})")

    def __getitem__(self, index):
        raise AssertionError("the test split was opened (indexing)")

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        raise AssertionError(f"the test split was opened ({func})")


def sealed_test(data: Cifar10) -> Cifar10:
    return Cifar10(data.train, data.val, Split(Sealed(len(data.test)), Sealed(len(data.test))), data.classes,
                   data.source)


@pytest.fixture(scope="module")
def lenet_teacher() -> api.Teacher:
    return api.load_teacher("lenet5", "no-such-folder", device="cpu")


def small_cfg(tmp_path, **changes) -> api.SearchConfig:
    settings = dict(model="lenet5", output_dir=str(tmp_path), search="random", episodes=6, top_k=3, batch_size=32,
                    workers=1, space=api.SpaceOptions(calib_batches=2))
    return api.SearchConfig(**{**settings, **changes})


@pytest.mark.parametrize("search", ["random", "exact-mse"])
def test_no_test_never_opens_the_test_split(tmp_path, sample, lenet_teacher, search) -> None:
    cfg = small_cfg(tmp_path, no_test=True, search=search)
    run = api.run_search(cfg, lenet_teacher, sealed_test(sample))
    result = run.result
    assert result is not None and result.test is None and result.coverage["split"] == "val"
    written = json.loads(run.paths.result.read_text())
    assert "metrics" not in written and written["coverage"]["split"] == "val"
    assert written["teacher"]["sha256"] == lenet_teacher.sha256


def test_final_test_is_explicit_and_once(tmp_path, sample, lenet_teacher) -> None:
    run = api.run_search(small_cfg(tmp_path, no_test=True), lenet_teacher, sample)
    result = api.evaluate_test(run.result, lenet_teacher, sample)
    assert result.test is not None and result.coverage["split"] == "test"
    assert result.test.acc_drop == pytest.approx(result.test.acc_teacher - result.test.acc_student, abs=1e-3)
    with pytest.raises(api.TrisegError, match="already evaluated"):
        api.evaluate_test(result, lenet_teacher, sample)
    tested = api.run_search(small_cfg(tmp_path, result_file="t.json"), lenet_teacher, sample).result
    assert tested.test == result.test and tested.config == result.config, "same seed: same config and test figures"


def test_final_test_mode_writes_in_place(tmp_path, capsys) -> None:
    common = ["--model", "lenet5", "--output-dir", str(tmp_path), "--workers", "1"]
    assert main(["search", *common, "--search", "random", "--episodes", "4", "--top-k", "2", "--calib-batches", "1",
                 "--no-test", "--result-file", "r.json"]) == 0
    path = tmp_path / "tri_ppo_int_codes" / "r.json"
    assert "metrics" not in json.loads(path.read_text())
    assert main(["final_test", *common, "--config-path", str(path)]) == 0
    tested = json.loads(path.read_text())
    assert tested["coverage"]["split"] == "test" and "acc_drop" in tested["metrics"]
    capsys.readouterr()
    assert main(["final_test", *common, "--config-path", str(path)]) == 2
    assert "already evaluated on the test split" in capsys.readouterr().err


def test_a_result_for_another_teacher_is_refused(tmp_path, sample, lenet_teacher) -> None:
    run = api.run_search(small_cfg(tmp_path, no_test=True), lenet_teacher, sample)
    run.result.settings["teacher"]["sha256"] = "0" * 64
    with pytest.raises(api.TrisegError, match="searched on another teacher"):
        api.evaluate_test(run.result, lenet_teacher, sample)


fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.sampled_from(["conv1", "conv2", "fc1", "fc2"]),
                       st.tuples(fractions, fractions, fractions, fractions, st.integers(10, 255)), min_size=1),
       st.booleans())
def test_result_json_round_trips(layers, tested) -> None:
    config = {name: decode(*u, tmax) for name, (*u, tmax) in layers.items()}
    result = api.SearchResult("lenet5", "fbgemm", config, "constrained-best", api.Validation(70.0, 69.5, 0.5, []),
                              {"split": "test" if tested else "val", "mapped_share": 0.4, "layers": {}},
                              api.TestMetrics(71.0, 70.0, 1.0, 97.5) if tested else None,
                              {"search": "cmaes", "seed": 2, "tmax": {k: c.tmax for k, c in config.items()}})
    again = api.SearchResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    legal = api.TrisegConfig("lenet5", "fbgemm", again.config, {}).validate(["conv1", "conv2", "fc1", "fc2"], 255)
    assert legal.layers == config


def test_reading_a_damaged_result_is_one_line(tmp_path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"layers": {}, "model": "lenet5", "backend": "fbgemm"}')
    with pytest.raises(api.TrisegError, match="not a search result"):
        api.SearchResult.read(path)
    path.write_text("{")
    with pytest.raises(api.TrisegError, match="not valid JSON"):
        api.SearchResult.read(path)
    with pytest.raises(api.TrisegError, match="is not a file"):
        api.SearchResult.read(tmp_path)
