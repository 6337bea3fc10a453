"""Typed options: legal ranges, one-line messages, and the CLI generated from the dataclasses."""

from __future__ import annotations

import math

import pytest

from triseg.cli.modes import all_modes
from triseg.cli.parser import parse_options
from triseg.errors import TrisegError
from triseg.jobs import SearchConfig, SpaceOptions, SupervisedJobConfig, TrainFloatConfig
from triseg.options import flag
from triseg.search.ppo import PPOConfig
from triseg.search.warm import WarmConfig


@pytest.mark.parametrize("build, message", [
    (lambda: SearchConfig(episodes=0), "--episodes must be a number >= 1, got 0"),
    (lambda: SearchConfig(kd_T=0.0), "--kd-T must be in (0, 1000], got 0.0"),
    (lambda: SearchConfig(max_acc_drop=math.nan), "--max-acc-drop must be in [0, 100], got nan"),
    (lambda: SearchConfig(attention_weight=math.inf), "--attention-weight must be in [0, 1e+06], got inf"),
    (lambda: SearchConfig(result_file="../../escape.json"), "--result-file must be a plain file name"),
    (lambda: SearchConfig(search="annealing"), "--search 'annealing' is unknown; choose one of ppo, random"),
    (lambda: SearchConfig(model="lenet6"), "--model 'lenet6' is unknown; choose one of lenet5, alexnet"),
    (lambda: SearchConfig(backend="tpu"), "--backend 'tpu' is unknown; choose one of fbgemm, qnnpack, x86"),
    (lambda: SpaceOptions(tmax_percentile=0.0), "--tmax-percentile must be in (0, 100], got 0.0"),
    (lambda: PPOConfig(update_timestep=0), "--update-timestep must be in [1, 1e+06], got 0"),
    (lambda: WarmConfig(warm_prob=2.0), "--warm-prob must be in (0, 1), got 2.0"),
    (lambda: TrainFloatConfig(epochs=-2), "--epochs must be a number >= 1, got -2"),
    (lambda: TrainFloatConfig(val_size=0), "--val-size must be a number >= 1, got 0"),
    (lambda: SupervisedJobConfig(kd_T=-1.0), "--kd-T must be in (0, 1000], got -1.0"),
    (lambda: SearchConfig(attention_weight=1e308), "--attention-weight must be in [0, 1e+06], got 1e+308"),
    (lambda: PPOConfig(lr=1e30), "--lr must be in (0, 1], got 1e+30"),
])
def test_illegal_values_fail_in_one_line(build, message) -> None:
    with pytest.raises(TrisegError) as exc:
        build()
    assert str(exc.value).startswith(message) and "\n" not in str(exc.value)


def test_nested_options_are_checked_on_replace() -> None:
    cfg = SearchConfig(model="lenet5")
    with pytest.raises(TrisegError, match="--lr must be in"):
        cfg.replace(ppo=PPOConfig(lr=-1.0))
    assert cfg.replace(seed=3).seed == 3 and cfg.seed == 0


def test_parse_options_fills_nested_groups_and_flags() -> None:
    cfg = parse_options(SearchConfig, ["--model", "lenet5", "--search", "ppo-warm", "--tmax-percentile", "30", "--lr",
                                       "0.01", "--warm-prob", "0.5", "--no-test", "--kd-T", "3"])
    assert (cfg.model, cfg.space.tmax_percentile, cfg.ppo.lr, cfg.warm.warm_prob, cfg.no_test, cfg.kd_T) == \
        ("lenet5", 30.0, 0.01, 0.5, True, 3.0)
    assert cfg.space.tmax_margin == SpaceOptions().tmax_margin and cfg.ppo.k_epochs == PPOConfig().k_epochs
    assert parse_options(SearchConfig, []).to_dict() == SearchConfig().to_dict()


def test_parsed_values_go_through_the_same_checks() -> None:
    with pytest.raises(TrisegError, match="--tmax-percentile must be in"):
        parse_options(SearchConfig, ["--tmax-percentile", "101"])
    with pytest.raises(SystemExit):
        parse_options(SearchConfig, ["--episodes", "many"])


def test_options_of_another_strategy_or_objective_are_refused() -> None:
    with pytest.raises(TrisegError, match="--lr applies only with --search ppo, ppo-warm"):
        parse_options(SearchConfig, ["--search", "cmaes", "--lr", "0.01"])
    with pytest.raises(TrisegError, match="--warm-prob applies only with --search ppo-warm"):
        parse_options(SearchConfig, ["--warm-prob", "0.5"])
    with pytest.raises(TrisegError, match="--safety-margin applies only with --objective savings"):
        parse_options(SearchConfig, ["--safety-margin", "0.5"])
    assert parse_options(SearchConfig, ["--objective", "savings", "--safety-margin", "0.5"]).safety_margin == 0.5


def test_modes_offer_only_their_options(capsys) -> None:
    modes = all_modes()
    with pytest.raises(SystemExit):
        parse_options(modes["models"].config, ["--backend", "tpu"])
    assert "unrecognized arguments: --backend tpu" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_options(modes["train_float"].config, ["--engine", "x86"])
    assert flag("kd_T") == "--kd-T"
