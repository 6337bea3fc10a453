"""Search speed: the LUT edits against the INT8 forward pass, and PPO episodes/s one at a time and batched.

For each model, in one run at batch 32 (the machine is named in the header):

* LUT kernels over one episode's activations at every approximated tap (channels_last, as the INT8
  convs leave them): the previous ``int_repr`` + numpy gather, torch indexing, and :data:`LUT_KERNELS`
  (numba's vectorised segment tests when installed, numpy's gather without it);
* the bare INT8 forward (the bound: an episode can never be faster than one forward pass);
* PPO episodes/s (ask + score + tell, the update every 50 episodes) one at a time and with up to
  ``--group`` configs per forward pass (``ask_many`` + ``score_many``), and the evaluator alone
  (``score_many`` on configs asked beforehand); the batched rewards are checked equal to single ones.

Untrained models are fine for timing (observers calibrated on random images), so VGG16 needs no training.

    python benchmarks/bench_search.py [--models lenet5 alexnet vgg16] [--threads 2] [--episodes 100] [--group 16]
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

import machine
from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")


def int8_model(name: str, engine: str) -> torch.nn.Module:
    """The zoo's INT8 model when there is one, else an untrained one calibrated on random images."""
    if api.stage_path(api.ZOO_DIR, name, "int8").exists():
        return api.load_int8(api.ZOO_DIR, name, engine)[0]
    torch.manual_seed(0)
    qat = api.qat_skeleton(name, "fbgemm")
    with torch.no_grad():
        for _ in range(4):
            qat(torch.randn(32, 3, 32, 32))
    return api.convert_int8(qat.eval(), engine)


def ms(fn, n: int, blocks: int = 5) -> float:
    """Median over ``blocks`` of the mean milliseconds per call over ``n`` calls (after a warm-up call)."""
    fn()
    times = []
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n)
    return 1e3 * statistics.median(times)


def take_before(x: torch.Tensor, table: np.ndarray) -> torch.Tensor:
    """The LUT edit before the kernel: a copy of the codes, numpy's gather, a copy into a quantized tensor."""
    codes = x.int_repr()
    out = torch.empty_like(codes)
    flat = (codes.numel(),)
    np.take(table, codes.as_strided(flat, (1,)).numpy(), out=out.as_strided(flat, (1,)).numpy())
    return torch._make_per_tensor_quantized_tensor(out, x.q_scale(), x.q_zero_point())


def torch_index(x: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """torch's own gather on the table (widens the codes to int64)."""
    return torch._make_per_tensor_quantized_tensor(table[x.int_repr().long()], x.q_scale(), x.q_zero_point())


def lut_kernels(model: torch.nn.Module, x: torch.Tensor, config: api.Config) -> dict[str, float]:
    """Milliseconds per episode of each LUT formulation over the activations of all mapped taps."""
    recorder = api.install(model, {}, keep=None)
    with torch.no_grad():
        model(x)
    api.attach(model, None)
    acts = [(recorder.records[model.tap_name(layer)].raw, c) for layer, c in config.items()]
    tables = [(a, api.quint8_table(c, a.q_zero_point())) for a, c in acts]
    for (a, c), (_, table) in zip(acts, tables):  # every formulation gives the reference codes
        ref = table[a.int_repr().long()]
        assert torch.equal(take_before(a, table.numpy()).int_repr(), ref)
        for kernel in api.LUT_KERNELS:
            assert torch.equal(api.int8_maps(a, api.map_rows([c]), a.q_zero_point(), kernel).int_repr(), ref)
    out = {"numpy take (before)": ms(lambda: [take_before(a, t.numpy()) for a, t in tables], 10),
           "torch index": ms(lambda: [torch_index(a, t) for a, t in tables], 3)}
    for kernel in api.LUT_KERNELS:
        rows = [(a, api.map_rows([c])) for a, c in acts]
        out[kernel] = ms(lambda: [api.int8_maps(a, r, a.q_zero_point(), kernel) for a, r in rows], 10)
    return out


def bench(name: str, engine: str, episodes: int, group: int) -> dict[str, float]:
    model = int8_model(name, engine)
    gen = torch.Generator().manual_seed(0)
    train = api.Split(torch.randint(0, 256, (32 * 40, 3, 32, 32), dtype=torch.uint8, generator=gen),
                      torch.randint(0, 10, (32 * 40,), generator=gen))
    space = api.calibrate_space(model, train, 8, 32, api.activation_top_code("fbgemm"))
    taps = [model.tap_name(layer) for layer in model.ATTENTION_LAYERS]
    batches = api.EpisodeBatches(model, train, 32, taps)
    for e in range(batches.num_batches):
        batches.teacher_outputs(e)
    evaluator = api.Evaluator(model, batches)
    x = batches.inputs(0)
    with torch.no_grad():
        forward = ms(lambda: model(x), 5)
    config = api.PPOStrategy(space, api.PPOConfig(), seed=1).ask(0)
    row: dict[str, float] = {"int8_forward_ms": forward, **lut_kernels(model, x, config)}

    def single(n: int) -> None:
        ppo = api.PPOStrategy(space, api.PPOConfig(), seed=0)
        for i in range(n):
            cfg = ppo.ask(i)
            ppo.tell(i, cfg, evaluator.score(cfg, i))

    def batched(n: int) -> None:
        ppo, i = api.PPOStrategy(space, api.PPOConfig(), seed=0), 0
        while i < n:
            configs = ppo.ask_many(i, evaluator.group_size(min(group, n - i)))
            for cfg, score in zip(configs, evaluator.score_many(configs, range(i, i + len(configs)))):
                ppo.tell(i, cfg, score)
                i += 1

    evaluator.score(config, 0)  # the first pass tells the evaluator how large a group may be
    k = evaluator.group_size(group)
    asked = [api.PPOStrategy(space, api.PPOConfig(), seed=2).ask(i) for i in range(k)]
    assert evaluator.score_many(asked, range(k)) == [evaluator.score(c, i) for i, c in enumerate(asked)]
    row["single_eps"] = episodes / (1e-3 * ms(lambda: single(episodes), 1, 2))
    row["batched_eps"] = episodes / (1e-3 * ms(lambda: batched(episodes), 1, 2))
    row["score_many_eps"] = k / (1e-3 * ms(lambda: evaluator.score_many(asked, range(k)), 3))
    row["group"] = k
    ppo = api.PPOStrategy(space, api.PPOConfig(), seed=0)
    row["ppo_ms"] = ms(lambda: [ppo.tell(i, c, api.Score(0.0, 0.0, 0.0)) for i, c in enumerate(ppo.ask_many(0, 50))],
                       1, 3) / 50
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "alexnet", "vgg16"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--engine", default="x86")
    p.add_argument("--episodes", type=int, default=100, help="PPO episodes per timing (a multiple of 50 is fair)")
    p.add_argument("--group", type=int, default=16, help="most configs per forward pass when batched")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"batch 32, {args.threads} threads, engine {args.engine}, group {args.group}, LUT kernel "
          f"{api.LUT_KERNELS[0]}, {machine.describe()}\n")
    kernels = ["numpy take (before)", "torch index", *api.LUT_KERNELS]
    print("LUT edits per episode (ms, all mapped taps), against the INT8 forward pass:\n")
    print("| model | INT8 forward | " + " | ".join(kernels) + f" | {api.LUT_KERNELS[0]} / forward |")
    print("|---" * (len(kernels) + 3) + "|")
    rows = {}
    for name in args.models:
        row = rows[name] = bench(name, args.engine, args.episodes, args.group)
        print(f"| {name} | {row['int8_forward_ms']:.2f} | " + " | ".join(f"{row[k]:.2f}" for k in kernels) +
              f" | {row[api.LUT_KERNELS[0]] / row['int8_forward_ms']:.0%} |", flush=True)
    print("\nPPO episodes/s; the bound is one INT8 forward pass per episode (1000 / forward ms); PPO's ceiling\n"
          "is the share of the bound a PPO search could reach if scoring cost nothing beyond the forward pass\n"
          "(forward / (forward + PPO's own ask+tell)):\n")
    print("| model | bound | single | batched (K) | score_many alone | PPO ask+tell ms | single / bound | "
          "batched / bound | PPO's ceiling |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, row in rows.items():
        bound = 1e3 / row["int8_forward_ms"]
        print(f"| {name} | {bound:.0f} | {row['single_eps']:.0f} | {row['batched_eps']:.0f} ({row['group']}) | "
              f"{row['score_many_eps']:.0f} | {row['ppo_ms']:.2f} | {row['single_eps'] / bound:.2f} | "
              f"{row['batched_eps'] / bound:.2f} | "
              f"{row['int8_forward_ms'] / (row['int8_forward_ms'] + row['ppo_ms']):.2f} |")


if __name__ == "__main__":
    main()
