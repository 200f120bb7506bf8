"""The base of the errors whose message tells the user what to do."""

from __future__ import annotations


class ClipforgeError(Exception):
    """A failure the user can act on from its message alone (a failed download, a set that could not be
    prepared, a missing extra): the `clipforge` command prints the message and exits with 1, without a
    traceback. Each subclass also derives from the built-in error it is a kind of."""
