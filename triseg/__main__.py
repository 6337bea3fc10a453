"""``python -m triseg``: the same as the ``triseg`` command."""

import sys

from triseg.cli import main

sys.exit(main())
