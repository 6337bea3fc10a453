"""The ``triseg`` command and ``python main.py --mode MODE``: the only place that parses arguments.

Each mode's options are generated from its settings dataclass (:mod:`triseg.jobs`); the mode's
function receives that dataclass, never an ``argparse.Namespace``. Before a mode runs, its values
are checked (on construction) and so are its paths on disk (:meth:`triseg.options.Options.check_paths`),
so bad input fails before any work or any file. A :class:`TrisegError` anywhere below becomes one
``error:`` line on stderr and exit code 2; so does an ``OSError`` (a full disk, a folder made
read-only while running) and, as a last resort, any other exception (``TRISEG_TRACEBACK=1`` shows it).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from triseg.cli.modes import Mode, all_modes
from triseg.cli.parser import OneLineParser, add_options, build_options
from triseg.errors import TrisegError
from triseg.options import OUTPUT_SUBFOLDERS, Options
from triseg.paths import clean_stale_temps, os_error_line

TRACEBACK_ENV = "TRISEG_TRACEBACK"


def build_parser(prog: str = "triseg", only: str | None = None) -> argparse.ArgumentParser:
    """The parser with one subcommand per mode; with ``only``, only that mode's options are added (the
    others keep their name and help), which is all a command line naming that mode needs."""
    parser = OneLineParser(prog=prog, description="Tri-segment INT8 activation approximation and LSQ QAT.")
    subs = parser.add_subparsers(dest="mode", metavar="MODE", parser_class=OneLineParser)
    for m in all_modes().values():
        sp = subs.add_parser(m.name, help=m.help, description=m.help)
        if only is None or only == m.name:
            add_options(sp, m.config)
        sp.set_defaults(mode_entry=m)
    return parser


def _mode_named(argv: list[str] | None) -> str | None:
    """The mode a command line names first, when it is one."""
    args = sys.argv[1:] if argv is None else argv
    first = next((a for a in args if not a.startswith("-")), None)
    return first if first in all_modes() else None


def one_line_warning(message: Warning | str, category: type[Warning], *_: object) -> str:
    """Show a warning to a CLI user as one line, without the source line behind it."""
    return f"warning: {message}\n"


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse, build the mode's settings, run; a TrisegError becomes one line on stderr and exit code 2."""
    warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")
    warnings.formatwarning = one_line_warning
    args = parser.parse_args(argv)
    entry: Mode | None = getattr(args, "mode_entry", None)
    if entry is None:
        parser.print_help()
        return fail(f"a mode is required; choose one of {', '.join(all_modes())}")
    try:
        cfg = build_options(entry.config, args)
        cfg.check_paths()
        clean_output_temps(cfg)
        entry.run(cfg)
    except TrisegError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted: rerun with --resume to continue", file=sys.stderr)
        return 130
    except OSError as exc:
        return fail(os_error_line(exc))
    except MemoryError:
        return fail("out of memory: lower --batch-size (or the sizes of the run)")
    except Exception as exc:  # the last resort: no user ever sees a traceback unless asked for
        if os.environ.get(TRACEBACK_ENV):
            traceback.print_exc()
        detail = " ".join(str(exc).split())[:300]
        if isinstance(exc, RuntimeError) and "alloc" in detail and "memory" in detail:
            return fail(f"out of memory ({detail[:120]}): lower --batch-size (or the sizes of the run)")
        return fail(f"unexpected {type(exc).__name__}: {detail} (a bug in triseg: please report it with the "
                    f"command; {TRACEBACK_ENV}=1 shows the traceback)")
    return 0


def fail(message: str) -> int:
    """Print one ``error:`` line (any newline in ``message`` folded) and return exit code 2."""
    print("error: " + " ".join(message.split()), file=sys.stderr)
    return 2


def clean_output_temps(cfg: Options) -> None:
    """Remove the temp files killed runs left in the mode's output folder and its usual subfolders."""
    for name in ("output_dir", "zoo_dir", "log_dir"):
        folder = getattr(cfg, name, None)
        if isinstance(folder, str) and folder:
            for sub in ("", *OUTPUT_SUBFOLDERS):
                clean_stale_temps(Path(folder) / sub)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``triseg`` console script."""
    return run(build_parser(only=_mode_named(argv)), argv)


def legacy_main(argv: list[str] | None = None) -> int:
    """``python main.py --mode MODE [options]``: the original tool's interface."""
    modes = all_modes()
    argv = list(sys.argv[1:] if argv is None else argv)
    pre = OneLineParser(prog="main.py", add_help=False)
    pre.add_argument("--mode")
    known, rest = pre.parse_known_args(argv)
    if known.mode is None:
        if "-h" in rest or "--help" in rest:
            print("usage: python main.py --mode MODE [options]\nmodes: " + ", ".join(modes))
            print("python main.py --mode MODE --help shows the options of one mode")
            return 0
        print(f"error: --mode is required; choose one of {', '.join(modes)}", file=sys.stderr)
        return 2
    if known.mode not in modes:
        print(f"error: unknown mode {known.mode!r}; choose one of {', '.join(modes)}", file=sys.stderr)
        return 2
    return run(build_parser(prog="main.py", only=known.mode), [known.mode, *rest])
