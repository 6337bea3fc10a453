"""Search strategies: exact-MSE optimality, legality, seeding, exact resume, and the CLI."""

from __future__ import annotations

import io
import json
import pickle

import pytest
import torch

from triseg.approx.calibrate import LayerHistogram
from triseg.approx.config import LayerCodes, t1_range, t2_range, v1_range, v2_range, validate
from triseg.cli import main
from triseg.jobs import SearchConfig
from triseg.search.base import Score
from triseg.search.exact_mse import exact_mse_codes, squared_error
from triseg.search.legal import decode, project
from triseg.search.ppo import PPOConfig
from triseg.search.registry import STRATEGIES, build_strategy
from triseg.search.space import SearchSpace

NAMES = ["ppo", "random", "tpe", "cmaes", "greedy", "exact-mse", "ppo-warm"]


pytestmark = pytest.mark.usefixtures("one_thread")


def brute_force(counts: torch.Tensor, tmax: int) -> int:
    """Least squared error over every legal map, by enumeration."""
    h = counts.double()
    c = torch.arange(len(h), dtype=torch.float64)
    best = None
    for t1 in t1_range(tmax):
        for t2 in t2_range(t1, tmax):
            base = float((h[1:t1 + 1] * c[1:t1 + 1] ** 2).sum())
            e1 = min(float((h[t1 + 1:t2 + 1] * (c[t1 + 1:t2 + 1] - v1) ** 2).sum()) for v1 in v1_range(t1, t2))
            e2 = min(float((h[t2 + 1:tmax + 1] * (c[t2 + 1:tmax + 1] - v2) ** 2).sum()) for v2 in v2_range(t2, tmax))
            total = base + e1 + e2
            best = total if best is None else min(best, total)
    return int(best)


@pytest.mark.parametrize("case", range(25))
def test_exact_mse_equals_brute_force(case: int) -> None:
    gen = torch.Generator().manual_seed(case)
    tmax = int(torch.randint(10, 26, (1,), generator=gen))
    counts = torch.randint(0, 50, (tmax + 6,), generator=gen)
    counts[torch.rand(len(counts), generator=gen) < 0.3] = 0  # empty codes and empty segments
    codes, err = exact_mse_codes(counts, tmax)
    validate("x", codes, 255)
    assert err == squared_error(counts, codes) == brute_force(counts, tmax)


def test_exact_mse_follows_the_histogram() -> None:
    counts = torch.zeros(256, dtype=torch.long)
    counts[[1, 20, 40]] = 1000  # three spikes: only code 1 -> 0 costs anything (1000 * 1^2)
    codes, err = exact_mse_codes(counts, 50)
    assert err == 1000 and codes.v1 == 20 and codes.v2 == 40


def test_legal_helpers_always_legal() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(500):
        tmax = int(torch.randint(10, 256, (1,), generator=gen))
        validate("x", decode(*torch.rand(4, generator=gen).tolist(), tmax), 255)
        validate("x", project(*(torch.randn(4, generator=gen) * 100).tolist(), tmax), 255)
        validate("x", decode(1.0, 1.0, 1.0, 1.0, tmax), 255)


def synthetic_space(seed: int = 0) -> SearchSpace:
    """Four layers with tmax at the edges of the legal range and random histograms."""
    gen = torch.Generator().manual_seed(seed)
    tmax = {"a": 10, "b": 11, "c": 40, "d": 255}
    hists = {k: LayerHistogram(torch.randint(0, 100, (256,), generator=gen)) for k in tmax}
    return SearchSpace(list(tmax), tmax, {}, torch.rand(4, 4, generator=gen), hists, 255)


def args_for(name: str, seed: int = 0) -> SearchConfig:
    ppo = PPOConfig(update_timestep=10) if name.startswith("ppo") else PPOConfig()
    return SearchConfig(search=name, seed=seed, ppo=ppo)


def fake_score(config: dict[str, LayerCodes], episode: int) -> Score:
    """A reward that prefers v1, v2 at their segment middles, plus episode noise."""
    err = sum((c.v1 - (c.t1 + c.t2) / 2) ** 2 + (c.v2 - (c.t2 + c.tmax) / 2) ** 2 for c in config.values())
    reward = -err / 100 - 0.1 * ((episode * 7919) % 13)
    return Score(reward, -reward, 0.0)


def drive(strategy, start: int, stop: int) -> list[tuple]:
    out = []
    for episode in range(start, stop):
        config = strategy.ask(episode)
        strategy.tell(episode, config, fake_score(config, episode))
        out.append(tuple(sorted((k, (v.t1, v.v1, v.t2, v.v2, v.tmax)) for k, v in config.items())))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_strategy_legal_seeded_and_resumable(name: str) -> None:
    assert name in STRATEGIES
    space = synthetic_space()
    full = drive(build_strategy(space, args_for(name)), 0, 40)
    for config in full:
        for layer, (t1, v1, t2, v2, tmax) in config:
            validate(layer, LayerCodes(t1, v1, t2, v2, tmax), 255)
    assert drive(build_strategy(space, args_for(name)), 0, 40) == full
    first = build_strategy(space, args_for(name))
    head = drive(first, 0, 25)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = build_strategy(space, args_for(name))
    resumed.load_state_dict(torch.load(buf, weights_only=False))
    assert head + drive(resumed, 25, 40) == full
    if name not in ("exact-mse",):
        assert len(set(full)) > 3, "the strategy should explore"


@pytest.mark.parametrize("name", ["random", "tpe", "cmaes", "ppo"])
def test_seed_changes_the_proposals(name: str) -> None:
    space = synthetic_space()
    assert drive(build_strategy(space, args_for(name, 0)), 0, 15) != \
        drive(build_strategy(space, args_for(name, 1)), 0, 15)


def test_optimisers_improve_on_synthetic_reward() -> None:
    """TPE and greedy must beat the mean of random configs on a smooth reward."""
    space = synthetic_space()

    def best(name: str) -> float:
        s = build_strategy(space, args_for(name))
        rewards = []
        for ep in range(150):
            config = s.ask(ep)
            score = Score(fake_score(config, 0).reward, 0.0, 0.0)
            s.tell(ep, config, score)
            rewards.append(score.reward)
        return max(rewards[-30:])

    random_mean = sum(fake_score(space.random_config(torch.Generator().manual_seed(i)), 0).reward
                      for i in range(50)) / 50
    assert best("tpe") > random_mean and best("greedy") > best("random") - 1e-9


def test_warm_start_concentrates_on_exact_mse() -> None:
    space = synthetic_space()
    args = args_for("ppo-warm")
    s = build_strategy(space, args)
    assert s.start_prob >= args.warm.warm_prob
    exact = build_strategy(space, args_for("exact-mse")).ask(0)
    same = [getattr(s.ask(ep)[k], f) == getattr(exact[k], f) for ep in range(30) for k in exact
            for f in ("t1", "t2", "v1", "v2")]
    assert sum(same) / len(same) > args.warm.warm_prob - 0.15
    plain = build_strategy(space, args_for("ppo"))
    assert sum(getattr(plain.ask(ep)[k], "v2") == exact[k].v2 for ep in range(30) for k in exact) < 30


def test_cli_search_exact_mse_and_unknown(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    rc = main(["search", "--model", "lenet5", "--search", "exact-mse", "--episodes", "1", "--output-dir", str(out),
               "--workers", "1", "--calib-batches", "2", "--result-file", "e.json"])
    assert rc == 0
    result = json.loads((out / "tri_ppo_int_codes" / "e.json").read_text())
    assert result["search"] == "exact-mse" and result["student_evaluations"] == 1
    assert set(result["layers"]) == {"conv1", "conv2", "fc1", "fc2"}
    rc = main(["train_ppo_triseg", "--model", "lenet5", "--search", "nope", "--output-dir", str(out)])
    assert rc == 2 and "choose one of" in capsys.readouterr().err


def test_strategies_pickle() -> None:
    space = synthetic_space()
    for name in NAMES:
        pickle.dumps(build_strategy(space, args_for(name)).state_dict())


def drive_batched(strategy, start: int, stop: int, most: int) -> list[tuple]:
    """Like :func:`drive`, with the loop's groups: ask_many, then tell each in order."""
    out, episode = [], start
    while episode < stop:
        configs = strategy.ask_many(episode, min(most, stop - episode))
        assert 1 <= len(configs) <= most
        for config in configs:
            strategy.tell(episode, config, fake_score(config, episode))
            out.append(tuple(sorted((k, (v.t1, v.v1, v.t2, v.v2, v.tmax)) for k, v in config.items())))
            episode += 1
    return out


@pytest.mark.parametrize("name", ["ppo", "ppo-warm", "random", "greedy", "tpe", "cmaes"])
def test_batched_asking_proposes_what_one_at_a_time_does(name: str) -> None:
    """PPO's rollouts, random draws and greedy rounds in groups: the same configs as one by one (optuna
    with its default batch of 1; larger batches are opt-in because they change its search)."""
    space = synthetic_space()
    full = drive(build_strategy(space, args_for(name)), 0, 40)
    assert drive_batched(build_strategy(space, args_for(name)), 0, 40, 7) == full


def test_optuna_batch_asks_several_trials_before_telling() -> None:
    from triseg.search.optuna_search import OptunaStrategy

    strategy = OptunaStrategy(synthetic_space(), "tpe", seed=0, batch=5)
    assert len(strategy.ask_many(0, 8)) == 5 and len(strategy.trials) == 5
    assert len(drive_batched(strategy, 5, 20, 8)) == 15


def test_score_batch_and_optuna_batch_are_options(monkeypatch, tmp_path) -> None:
    """--optuna-batch reaches the optuna strategy, --score-batch the search loop; both are checked in one line."""
    from triseg.cli.parser import parse_options
    from triseg.errors import TrisegError
    from triseg.search import job

    cfg = parse_options(SearchConfig, ["--search", "cmaes", "--optuna-batch", "4", "--score-batch", "8"])
    assert build_strategy(synthetic_space(), cfg).batch == 4 and cfg.score_batch == 8
    assert build_strategy(synthetic_space(), args_for("tpe")).batch == 1
    with pytest.raises(TrisegError, match="--optuna-batch applies only with --search tpe, cmaes"):
        parse_options(SearchConfig, ["--search", "ppo", "--optuna-batch", "4"])
    with pytest.raises(TrisegError, match="--score-batch must be in"):
        SearchConfig(score_batch=0)
    seen = []

    def stop(strategy, evaluator, settings, *args, **kwargs):
        seen.append(settings.score_batch)
        raise TrisegError("stop")

    monkeypatch.setattr(job, "run_loop", stop)
    with pytest.raises(TrisegError, match="stop"):
        job.run_search(SearchConfig(model="lenet5", search="random", score_batch=3, episodes=2, no_test=True,
                                    batch_size=16, output_dir=str(tmp_path), space=job.SpaceOptions(calib_batches=1)))
    assert seen == [3]


@pytest.fixture(scope="module")
def lenet_evaluation(lenet_int8, sample):
    """LeNet-5 INT8, batches of 16 from the sample, and 6 random configs (one empty, one partial)."""
    from triseg.search.base import EpisodeBatches
    from triseg.search.space import build_space
    from triseg.search.random_search import RandomStrategy

    int8 = lenet_int8[0]
    taps = [int8.tap_name(layer) for layer in int8.ATTENTION_LAYERS]
    batches = EpisodeBatches(int8, sample.train, 16, taps, seed=0)
    space = build_space(int8, sample.train, 2, 16, 127, seed=0)
    strategy = RandomStrategy(space, seed=3)
    configs = [strategy.ask(i) for i in range(6)]
    configs[2] = {}
    configs[4] = dict(list(configs[4].items())[:2])
    return int8, batches, configs


def reference_score(evaluator, config, episode: int) -> Score:
    """One config scored as before batching: a fresh recorder (CostRecorder for savings), kd_loss, at_loss."""
    from triseg.approx.losses import at_loss, attention_map, kd_loss
    from triseg.approx.student import install
    from triseg.hardware.cost import CostRecorder
    from triseg.recorder import attach

    model, taps = evaluator.model, evaluator.batches.attention_taps
    t_logits, t_maps = evaluator.batches.teacher_outputs(episode)
    savings = evaluator.objective == "savings"
    recorder = (attach(model, CostRecorder(model, config, keep=set(taps))) if savings
                else install(model, config, keep=set(taps)))
    with torch.no_grad():
        logits = model(evaluator.batches.inputs(episode))
    if savings:
        recorder.close()
    attach(model, None)
    kd = float(kd_loss(logits, t_logits, evaluator.T))
    at = float(at_loss([attention_map(recorder.records[t].values) for t in taps], t_maps))
    distill = kd + evaluator.attention_weight * at
    if not savings:
        return Score(-distill, kd, at, distill)
    left = recorder.multiplies() / max(1, evaluator.batches.teacher_multiplies(episode))
    return Score(-(left + evaluator.savings_weight * distill), kd, at, distill, left)


@pytest.mark.parametrize("objective", ["reward", "savings"])
@pytest.mark.parametrize("threads", [1, 2])
def test_score_many_equals_scoring_one_at_a_time_exactly(lenet_evaluation, objective, threads) -> None:
    from triseg.search.base import Evaluator

    int8, batches, configs = lenet_evaluation
    torch.set_num_threads(threads)
    evaluator = Evaluator(int8, batches, objective=objective)
    episodes = list(range(3, 3 + len(configs)))
    expect = [reference_score(evaluator, c, e) for c, e in zip(configs, episodes)]
    assert len({s.reward for s in expect}) == len(configs)
    assert [evaluator.score(c, e) for c, e in zip(configs, episodes)] == expect
    assert evaluator.score_many(configs, episodes) == expect
    assert evaluator.score_many(configs, 5) == [reference_score(evaluator, c, 5) for c in configs]
    assert evaluator.evaluations == 3 * len(configs)
    with pytest.raises(ValueError, match="episodes"):
        evaluator.score_many(configs, [1, 2])


@pytest.mark.parametrize("name", ["ppo", "greedy"])
def test_search_loop_gives_the_same_search_batched_and_one_at_a_time(lenet_evaluation, tmp_path, name) -> None:
    """Same history, top-k and evaluations with groups of up to 8 per forward pass as with 1, and a run
    stopped mid-way and resumed (batched) ends like both."""
    from triseg.search.base import Evaluator
    from triseg.search.registry import build_strategy as build
    from triseg.search.run import SearchSettings, run_search
    from triseg.search.space import build_space

    int8, batches, _ = lenet_evaluation
    space = build_space(int8, batches.split, 2, 16, 127, seed=0)
    cfg = SearchConfig(search=name, seed=0, ppo=PPOConfig(update_timestep=6) if name == "ppo" else PPOConfig())

    def run(tag: str, score_batch: int, stop_after: int | None = None, resume: bool = False):
        settings = SearchSettings(episodes=23, top_k=4, eval_every=23, checkpoint_every=5, stop_after=stop_after,
                                  score_batch=score_batch)
        evaluator = Evaluator(int8, batches)
        out = run_search(build(space, cfg), evaluator, settings, tmp_path / f"{tag}.pt", tmp_path / tag,
                         resume=resume)
        return out, evaluator.evaluations

    one, n_one = run("one", 1)
    many, n_many = run("many", 8)
    run("resumed", 8, stop_after=12)
    resumed, n_resumed = run("resumed", 8, resume=True)
    assert n_one == n_many == n_resumed == 23
    for out in (many, resumed):
        assert out.history == one.history
        assert [(c.reward, c.episode, c.config) for c in out.top.best()] == \
            [(c.reward, c.episode, c.config) for c in one.top.best()]


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
def test_episode_inputs_by_lookup_equal_normalize(sample, monkeypatch, kernel) -> None:
    from triseg.approx import lut
    from triseg.data import normalize
    from triseg.search.base import EpisodeBatches

    if kernel == "numpy":
        monkeypatch.setattr(lut, "numba", None)
    elif lut.numba is None:
        pytest.skip("numba is not installed")
    batches = EpisodeBatches(None, sample.train, 16, [], seed=0)
    expect = torch.cat([normalize(sample.train.x[batches.order[e % batches.num_batches]]) for e in (0, 5, 3, 40)])
    assert torch.equal(batches.inputs_many([0, 5, 3, 40]), expect)
    assert torch.equal(batches.inputs(5), expect[16:32])
