"""The original tool's interface: ``python main.py --mode MODE --model MODEL [options]``."""

import sys

from triseg.cli import legacy_main

if __name__ == "__main__":
    sys.exit(legacy_main())
