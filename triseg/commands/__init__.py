"""Importing this package registers every mode with :mod:`triseg.cli`."""

from triseg.commands import pipeline, search, zoo  # noqa: F401
