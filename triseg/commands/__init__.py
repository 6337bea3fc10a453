"""Importing this package registers every mode with :mod:`triseg.cli`."""

from triseg.commands import pipeline, search, supervised, zoo  # noqa: F401
from triseg.commands import analysis  # noqa: F401  (imported last: its modes are listed after the pipeline's)
