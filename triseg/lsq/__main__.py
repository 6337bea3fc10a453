"""``python -m triseg.lsq lsq-train|lsq-qat|lsq-infer ...``: the LSQ subcommands without the main CLI."""

import argparse
import sys

from triseg.errors import TrisegError
from triseg.lsq.cli import add_subcommands


def main(argv: list[str] | None = None) -> int:
    """Parse, run, and print a TrisegError as one line (exit code 2)."""
    parser = argparse.ArgumentParser(prog="python -m triseg.lsq")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except TrisegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
