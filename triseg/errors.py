"""The one exception type that the CLI turns into a one-line message and a non-zero exit."""


class TrisegError(Exception):
    """A user-facing error: bad input, a missing prerequisite, an illegal config."""
