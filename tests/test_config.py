"""Per-layer codes: every legality rule, JSON round trip, malformed files, unknown layers."""

from __future__ import annotations

import json
import os

import pytest

from triseg.approx.config import LayerCodes, TrisegConfig, load_config, validate
from triseg.errors import TrisegError

C = LayerCodes(t1=3, v1=6, t2=9, v2=12, tmax=14)


@pytest.mark.parametrize("codes,rule", [
    (LayerCodes(3, 6, 9, 12, 140), "tmax 140 must be <= 127"),
    (LayerCodes(3, 6, 9, 12, 9), "tmax 9 must be >= 10"),
    (LayerCodes(1, 6, 9, 12, 14), "t1 1 must be in"),
    (LayerCodes(11, 16, 20, 30, 40), "t1 11 must be in"),
    (LayerCodes(7, 9, 10, 12, 14), "t1 7 must be in"),
    (LayerCodes(3, 5, 6, 12, 14), "t2 6 must be in"),
    (LayerCodes(3, 5, 11, 12, 14), "t2 11 must be in"),
    (LayerCodes(3, 3, 9, 12, 14), "v1 3 must be in"),
    (LayerCodes(3, 9, 9, 12, 14), "v1 9 must be in"),
    (LayerCodes(3, 6, 9, 9, 14), "v2 9 must be in"),
    (LayerCodes(3, 6, 9, 15, 14), "v2 15 must be in"),
])
def test_every_rule_is_checked_and_named(codes, rule):
    with pytest.raises(TrisegError) as err:
        validate("conv7", codes, top_code=127)
    assert "layer conv7" in str(err.value) and rule in str(err.value)
    validate("conv7", C, top_code=127)


def test_json_round_trip_and_windows_path(tmp_path):
    cfg = TrisegConfig("lenet5", "fbgemm", {"conv1": C, "fc1": LayerCodes(2, 5, 8, 20, 30)},
                       {"selection": "constrained-best", "metrics": {"acc_drop": 1.0}})
    obj = cfg.to_json()
    assert obj["layers"]["conv1"] == {"t1_code": 3, "v1_code": 6, "t2_code": 9, "v2_code": 12, "tmax_code": 14}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.json").write_text(json.dumps(obj))
    back = load_config(str(tmp_path / "sub" / "r.json"))
    assert back == cfg
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert load_config(".\\sub\\r.json") == cfg
    finally:
        os.chdir(cwd)


@pytest.mark.parametrize("bad,msg", [
    ({"layers": {"conv1": {"t1_code": 3}}, "model": "m", "backend": "fbgemm"}, "needs integer keys"),
    ({"layers": {"conv1": {**C.to_json(), "v1_code": 6.5}}, "model": "m", "backend": "fbgemm"}, "must be integers"),
    ({"model": "m", "backend": "fbgemm"}, "not a triseg config"),
])
def test_malformed_configs_give_one_line_errors(tmp_path, bad, msg):
    p = tmp_path / "c.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(TrisegError, match=msg):
        load_config(str(p))


def test_unknown_layer_is_rejected():
    cfg = TrisegConfig("lenet5", "fbgemm", {"conv9": C}, {})
    with pytest.raises(TrisegError, match="conv9"):
        cfg.validate(["conv1", "conv2"], 127)
