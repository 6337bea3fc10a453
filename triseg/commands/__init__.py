"""Importing this package registers every mode with :mod:`triseg.cli`."""

from triseg.commands import pipeline, search  # noqa: F401
