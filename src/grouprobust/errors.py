"""The project's exception: raised for every error a user can cause.

The message is one line naming the problem and the fix; the CLI prints it and exits 2.
"""


class GroupRobustError(ValueError):
    """A user-caused error (bad input, unknown name, diverging run) with a one-line message."""


class DivergedError(GroupRobustError):
    """Training produced a non-finite loss; the run is marked failed with this reason."""
