"""Search speed: PPO episodes/s at batch 32 on the INT8 student, and where an episode's time goes.

For each model it measures, in one run: whole episodes (PPO ask + student forward with the maps +
reward + PPO tell/update), the bare INT8 forward, the forward with the maps installed, the PPO
ask and the amortised PPO update. Untrained models are fine for timing (observers are calibrated on
random images), so VGG16 needs no training.

    python benchmarks/bench_search.py [--models lenet5 alexnet vgg16] [--threads 2] [--episodes 100]
"""

from __future__ import annotations

import argparse
import time
import warnings

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


def seconds(fn, n: int) -> float:
    """Mean seconds per call over ``n`` calls (after one warm-up call)."""
    fn(0)
    t0 = time.perf_counter()
    for i in range(1, n + 1):
        fn(i)
    return (time.perf_counter() - t0) / n


def bench(name: str, engine: str, episodes: int) -> dict[str, float]:
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
    ppo = api.PPOStrategy(space, api.PPOConfig(), seed=0)

    def episode(i: int) -> None:
        cfg = ppo.ask(i)
        ppo.tell(i, cfg, evaluator.score(cfg, i))

    whole = seconds(episode, episodes)
    cfg = ppo.ask(0)
    x = batches.inputs(0)
    with torch.no_grad():
        bare = seconds(lambda i: model(x), 20)
        api.install(model, cfg)
        mapped = seconds(lambda i: model(x), 20)
        api.attach(model, None)
    ppo.buffer = {k: [] for k in ppo.buffer}
    ask = seconds(ppo.ask, ppo.cfg.update_timestep - 1)
    ppo.buffer["rewards"] = torch.randn(ppo.cfg.update_timestep).tolist()
    t0 = time.perf_counter()
    ppo.update()
    update = (time.perf_counter() - t0) / ppo.cfg.update_timestep
    return {"episodes/s": 1 / whole, "episode_ms": 1e3 * whole, "int8_forward_ms": 1e3 * bare,
            "luts_ms": 1e3 * (mapped - bare), "ppo_ask_ms": 1e3 * ask, "ppo_update_ms": 1e3 * update,
            "layers": len(space.layers)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lenet5", "alexnet", "vgg16"])
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--engine", default="x86")
    p.add_argument("--episodes", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cols = ["episodes/s", "episode_ms", "int8_forward_ms", "luts_ms", "ppo_ask_ms", "ppo_update_ms", "layers"]
    print(f"batch 32, {args.threads} threads, engine {args.engine}, {machine.describe()}\n")
    print("| model | " + " | ".join(cols) + " |\n" + "|---" * (len(cols) + 1) + "|")
    for name in args.models:
        row = bench(name, args.engine, args.episodes)
        print(f"| {name} | " + " | ".join(f"{row[c]:.1f}" if c != "layers" else str(row[c]) for c in cols) + " |",
              flush=True)


if __name__ == "__main__":
    main()
