"""Wall time of one whole savings search job, and where it goes: calibration, the teacher's cached outputs,
the search episodes, and the selection on validation (Pareto front validated, hardware counted).

Runs ``triseg search --objective savings --dynamic-tmax`` through the public API on the real data with
the zoo's teacher, validation only (the test split is not opened). Then selects again on the job's
candidates with and without the race on validation (``--race``): the time of each and
whether they pick the same config. ``--archive CKPT`` skips the search and compares the two on the
candidates of a finished search's checkpoint (e.g. a sweep cell's).

    python benchmarks/bench_savings.py --data-dir ../shared/data/cifar10-jpg.tar.gz \\
        [--model alexnet] [--search ladder] [--episodes 700] [--episode-images 1000] [--threads 2] \\
        [--archive CKPT ...]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import torch

import machine
from triseg import api

warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", default="alexnet")
    p.add_argument("--search", default="ladder")
    p.add_argument("--episodes", type=int, default=700)
    p.add_argument("--episode-images", type=int, default=1000)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--archive", nargs="+", default=[], help="compare the selections on these checkpoints' candidates")
    p.add_argument("--race-only", action="store_true", help="--archive: select with the race only, and compare its "
                                                            "pick with the one in the cell's result.json")
    args = p.parse_args()
    if args.archive:
        teacher = api.load_teacher(args.model, "outputs")
        data = api.load_data(api.SearchConfig(model=args.model, data_dir=args.data_dir))
        torch.set_num_threads(args.threads)
        print(f"{args.model}: selection on {len(data.val)} validation images, {args.threads} threads, "
              f"{machine.describe()}")
        for path in args.archive:
            top = api.candidates_from(torch.load(path, map_location="cpu", weights_only=False)["top"])
            cell = Path(path).parent.parent
            recorded = cell / "tri_ppo_int_codes" / "result.json"
            compare_selections(teacher, data.val, top, cell.name, not args.race_only,
                               api.SearchResult.read(recorded) if recorded.exists() else None)
        return
    print(f"{args.model} {args.search}, {args.episodes} episodes on {args.episode_images} training images, "
          f"{args.threads} threads, {machine.describe()}")
    with tempfile.TemporaryDirectory() as out:
        cfg = api.SearchConfig(model=args.model, search=args.search, episodes=args.episodes, seed=args.seed,
                               objective="savings", episode_images=args.episode_images, no_test=True,
                               data_dir=args.data_dir, output_dir=out, workers=args.threads,
                               space=api.SpaceOptions(dynamic_tmax=True))
        t0 = time.perf_counter()
        teacher = api.load_teacher(args.model, out)
        data = api.load_data(cfg)
        t1 = time.perf_counter()
        torch.set_num_threads(args.threads)
        space = api.build_space(teacher, data, cfg.space, cfg.batch_size, cfg.seed)
        t2 = time.perf_counter()
        result = api.run_search(cfg, teacher, data, space).result
        t3 = time.perf_counter()
        paths = api.RunPaths(Path(out), args.model, args.search, args.seed, cfg.result_file)
        top = api.candidates_from(torch.load(paths.checkpoint, map_location="cpu", weights_only=False)["top"])
    search, select = result.settings["search_wall_time_s"], result.settings["selection_wall_time_s"]
    rows = {"load teacher + data": t1 - t0, "calibration": t2 - t1, "search episodes": search,
            "selection on val": select, "teacher outputs + rest": (t3 - t2) - search - select}
    total = t3 - t1
    print("\n| phase | s | share |\n|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | {s:.1f} | {'' if name.startswith('load') else f'{s / total:.2f}'} |")
    print(f"| **search job (calibration to result)** | **{total:.1f}** | 1.00 |")
    hw = result.settings["hardware"]["totals"]
    print(f"\nchosen: val drop {result.validation.acc_drop:.2f}, multiplies left "
          f"{hw['multiplies_left_vs_zero_skipping_int8']:.4f} of zero-skipping INT8 (val), "
          f"{result.settings['student_evaluations']} evaluations")
    compare_selections(teacher, data.val, top, f"seed {args.seed}")


def compare_selections(teacher: api.Teacher, val: api.Split, top: list[api.Candidate], name: str,
                       exhaustive: bool = True, recorded: api.SearchResult | None = None) -> None:
    """Time the savings selection on ``top`` without (``exhaustive``) and with the race (the teacher's val pass
    shared), and say whether the race picks what the exhaustive pass, and the ``recorded`` result, picked."""
    t0 = time.perf_counter()
    teacher_val = api.teacher_on_validation(teacher.model, val)
    t1 = time.perf_counter()
    times, picks = {}, {}
    for race in (False, True) if exhaustive else (True,):
        start = time.perf_counter()
        chosen, front = api.select_savings(teacher.model, val, top, 2.0, 1.0, teacher=teacher_val, race=race)
        times[race], picks[race] = time.perf_counter() - start, chosen
    raced = picks[True]
    seen = [c.get("val_images", len(val)) for c in raced.validation.candidates]
    print(f"\n{name}: {len(top)} candidates; teacher on val {t1 - t0:.1f} s; selection with the race "
          f"{times[True]:.1f} s ({seen.count(len(val))} candidates on the whole split, {sum(seen)} of "
          f"{len(seen) * len(val)} candidate-images counted), val drop {raced.validation.acc_drop:.2f}")
    if exhaustive:
        print(f"  without the race {times[False]:.1f} s, val drop {picks[False].validation.acc_drop:.2f}; "
              f"same pick: {raced.config == picks[False].config}")
    if recorded is not None:
        print(f"  the recorded result's pick (val drop {recorded.validation.acc_drop:.2f}): same pick: "
              f"{raced.config == recorded.config}")


if __name__ == "__main__":
    main()
