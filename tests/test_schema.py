"""The schema of config and result files: every file the project ships passes, and a field of the wrong type is
one line naming where it is."""

import json
from pathlib import Path

import pytest

from triseg.approx.config import TrisegConfig, load_config
from triseg.errors import TrisegError
from triseg.search.result import SearchResult

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p for folder in ("results", "examples") for p in (ROOT / folder).rglob("*.json")
                 if isinstance(obj := json.loads(p.read_text()), dict) and "layers" in obj)
RESULT = ROOT / "results" / "savings" / "vgg16" / "final" / "vgg16__ladder__savings" / \
    "vgg16__ladder__savings__dynamic__b1000__seed2.json"


def test_every_shipped_config_and_result_passes():
    assert len(SHIPPED) > 100
    for path in SHIPPED:
        obj = json.loads(path.read_text())
        (SearchResult.read if "validation" in obj else load_config)(str(path))


@pytest.mark.parametrize("edit, where", [
    (lambda r: r["validation"]["candidates"][3].update(episode=2.5), "$.validation.candidates[3].episode must be "
                                                                     "integer, not 2.5"),
    (lambda r: r["validation"].pop("acc_drop"), "$.validation: 'acc_drop' is a required property"),
    (lambda r: r["metrics"].update(acc_student=None), "$.metrics.acc_student must be number, not None"),
    (lambda r: r["pareto_front"][1].pop("layers"), "$.pareto_front[1]: 'layers' is a required property"),
    (lambda r: r["coverage"]["layers"].update(conv1_1=[1]), "$.coverage.layers.conv1_1 must be object, not [1]"),
    (lambda r: r["hardware"]["layers"]["fc"].update(skipped_share="a"), "$.hardware.layers.fc.skipped_share must be "
                                                                        "number, not 'a'"),
    (lambda r: r["teacher"].update(sha256=7), "$.teacher.sha256 must be string, not 7"),
    (lambda r: r["tmax"].update(conv1_1=True), "$.tmax.conv1_1 must be integer, not True"),
    (lambda r: r.update(seed="2"), "$.seed must be integer, not '2'"),
    (lambda r: r.update(backend=None), "$.backend must be string, not None"),
    (lambda r: r["layers"].update(conv1_1="x" * 100), "$.layers.conv1_1 must be object, not 'xxxxxxxxxxxxxxxxxxxx"),
], ids=["candidate-episode", "validation-drop", "metrics-null", "front-layers", "coverage-layer", "hardware-share",
        "teacher-sha", "tmax-bool", "seed-str", "backend-null", "layer-str"])
def test_a_mistyped_field_is_one_line_naming_it(edit, where):
    obj = json.loads(RESULT.read_text())
    edit(obj)
    with pytest.raises(TrisegError) as info:
        SearchResult.from_json(obj, "r.json")
    message = str(info.value)
    assert message.startswith("r.json: not a search result (") and where in message and "\n" not in message
    assert len(message) < 200


def test_a_config_needs_no_result_fields_but_types_those_it_has():
    obj = json.loads(RESULT.read_text())
    config = {key: obj[key] for key in ("layers", "model", "backend")}
    assert TrisegConfig.from_json(config, "c.json").model == "vgg16"
    partial = {**config, "metrics": {"acc_drop": 1.0}}
    assert TrisegConfig.from_json(partial, "c.json").extra["metrics"] == {"acc_drop": 1.0}
    with pytest.raises(TrisegError, match=r"not a search result \(\$: 'validation' is a required property\)"):
        SearchResult.from_json(config, "c.json")
    with pytest.raises(TrisegError, match=r"c.json: not a triseg config \(\$.metrics.acc_drop must be number"):
        TrisegConfig.from_json({**config, "metrics": {"acc_drop": "1"}}, "c.json")
