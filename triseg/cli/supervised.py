"""Mode train_supervised_triseg: the original tool's gradient-based method, in the search's output format."""

from __future__ import annotations

from triseg.cli.modes import Mode
from triseg.cli.search import report_run
from triseg.jobs import SupervisedJobConfig
from triseg.search.job import run_supervised


def train_supervised_triseg(cfg: SupervisedJobConfig) -> None:
    report_run(run_supervised(cfg))


MODES = [
    Mode("train_supervised_triseg", "learn tri-segment maps by gradient descent on KD -> "
         "tri_ppo_int_codes/<result-file>", SupervisedJobConfig, train_supervised_triseg),
]
