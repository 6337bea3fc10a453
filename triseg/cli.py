"""The ``triseg`` command: one subcommand per mode, registered with :func:`mode`.

Adding a mode is one decorated function in ``triseg/commands/``: it declares its own options and
gets the common ones (model, data, output, seed, backend, device, ...) for free. ``main.py`` maps the
original ``--mode`` interface onto the same registry.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

from triseg.errors import TrisegError

Runner = Callable[[argparse.Namespace], None]
Adder = Callable[[argparse.ArgumentParser], None]


@dataclass
class Mode:
    """One subcommand: its help, its own options and the function that runs it."""

    name: str
    help: str
    add_arguments: Adder
    run: Runner


MODES: dict[str, Mode] = {}
LSQ_MODES = ("lsq-train", "lsq-qat", "lsq-infer")


def mode(name: str, help: str, add_arguments: Adder = lambda p: None) -> Callable[[Runner], Runner]:
    """Register the decorated function as the mode ``name``."""

    def register(run: Runner) -> Runner:
        MODES[name] = Mode(name, help, add_arguments, run)
        return run

    return register


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line, without the usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_common(p: argparse.ArgumentParser) -> None:
    """Options every mode shares."""
    g = p.add_argument_group("common options")
    g.add_argument("--model", default="vgg16", help="model name (see `triseg models`); default vgg16")
    g.add_argument("--data-dir", default=None,
                   help="CIFAR-10: cifar-10-batches-py folder, ImageFolder tree or .tar(.gz) of one; "
                        "default $TRISEG_DATA_DIR, else the tiny sample shipped with triseg")
    g.add_argument("--download", action="store_true", help="download CIFAR-10 into --data-dir when missing")
    g.add_argument("--val-size", type=int, default=None,
                   help="validation images carved from train (default 5000, or 10%% of a smaller train split)")
    g.add_argument("--output-dir", default="outputs", help="where model files and results go (default outputs/)")
    g.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    g.add_argument("--backend", default=None, help="quantized backend: fbgemm (default), qnnpack or x86")
    g.add_argument("--engine", default=None,
                   help="INT8 kernels: fbgemm, x86 or qnnpack (default x86 for fbgemm/x86 models, else qnnpack)")
    g.add_argument("--device", default="auto", help="auto, cpu or cuda (INT8 kernels always run on the CPU)")
    g.add_argument("--workers", type=int, default=None, help="CPU threads for tensor math (default: all cores)")
    g.add_argument("--batch-size", type=int, default=128, help="batch size (default 128)")
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")


def build_parser(prog: str = "triseg") -> argparse.ArgumentParser:
    """The full parser with one subcommand per registered mode."""
    import triseg.commands  # noqa: F401  (registers the modes)

    parser = OneLineParser(prog=prog, description="Tri-segment INT8 activation approximation and LSQ QAT.")
    subs = parser.add_subparsers(dest="mode", metavar="MODE", parser_class=OneLineParser)
    for m in MODES.values():
        sp = subs.add_parser(m.name, help=m.help, description=m.help)
        add_common(sp)
        m.add_arguments(sp)
        sp.set_defaults(run=m.run)
    from triseg.lsq.cli import add_subcommands as add_lsq_subcommands

    add_lsq_subcommands(subs)  # lsq-train, lsq-qat, lsq-infer bring their own options
    return parser


def one_line_warning(message: Warning | str, category: type[Warning], *_: object) -> str:
    """Show a warning to a CLI user as one line, without the source line behind it."""
    return f"warning: {message}\n"


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse, run, and turn a TrisegError into one line on stderr with exit code 2."""
    warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")
    warnings.formatwarning = one_line_warning
    args = parser.parse_args(argv)
    handler = getattr(args, "run", None) or getattr(args, "func", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        handler(args)
    except TrisegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun with --resume to continue", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``triseg`` console script."""
    return run(build_parser(), argv)


def legacy_main(argv: list[str] | None = None) -> int:
    """``python main.py --mode MODE [options]``: the original tool's interface."""
    import triseg.commands  # noqa: F401

    argv = list(sys.argv[1:] if argv is None else argv)
    pre = OneLineParser(prog="main.py", add_help=False)
    pre.add_argument("--mode")
    known, rest = pre.parse_known_args(argv)
    if known.mode is None:
        if "-h" in rest or "--help" in rest:
            print("usage: python main.py --mode MODE [options]\nmodes: " + ", ".join(MODES))
            print("python main.py --mode MODE --help shows the options of one mode")
            return 0
        print(f"main.py: error: --mode is required; choose one of {', '.join(MODES)}", file=sys.stderr)
        return 2
    if known.mode not in MODES and known.mode not in LSQ_MODES:
        print(f"main.py: error: unknown mode {known.mode!r}; choose one of {', '.join([*MODES, *LSQ_MODES])}",
              file=sys.stderr)
        return 2
    return run(build_parser(prog="main.py"), [known.mode, *rest])

