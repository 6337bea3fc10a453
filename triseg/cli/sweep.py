"""The ``sweep`` mode: an experiment grid of search jobs (:mod:`triseg.sweep`)."""

from __future__ import annotations

from triseg.cli.modes import Mode
from triseg.jobs import SweepConfig
from triseg.sweep import final_test, load_spec, run_sweep


def sweep(cfg: SweepConfig) -> None:
    spec = load_spec(cfg.spec)
    if cfg.final_test:
        written = final_test(spec)
        print(f"{len(written)} results evaluated on test (every seed of each group's row chosen on validation) -> "
              f"{spec.output / 'table.md'}")
        return
    summary = run_sweep(spec, cfg.address, cfg.max_parallel)
    print(f"{summary['cells']} cells ({summary['ran']} run, {len(summary['failed'])} failed) in "
          f"{summary['wall_time_s']:.0f}s -> {spec.output / 'table.md'}")


MODES = [
    Mode("sweep", "run an experiment grid of searches (Ray tasks when Ray is installed) -> <output>/table.md; "
         "--final-test evaluates every seed of each group's row chosen on validation once on test", SweepConfig, sweep),
]
