"""The one exception type that the CLI turns into a one-line message and a non-zero exit, and how to quote
another library's complaint in such a line."""


class TrisegError(Exception):
    """A user-facing error: bad input, a missing prerequisite, an illegal config."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """The first line of an exception's message, cut to ``limit`` characters (its type name when it has none),
    for a one-line error that quotes a library's complaint."""
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else type(exc).__name__
