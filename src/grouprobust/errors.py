"""The project's exception: raised for every error a user can cause.

The message is one line naming the problem and the fix, in the library's own terms (parameter and
option names, never command-line flags). ``subject`` says what the error is about, so that a front
end can name its own way of setting it: ``"hparam:<name>"`` (a hyper-parameter), ``"data:<name>"``
(a dataset option) or the name of a run argument (``"select"``, ``"regime"``, ``"device"``,
``"stage1"``, ``"out"``, ``"executor"``, ``"workers"``, ``"address"``, ``"spec"`` ...). The command
line (`grouprobust.cli`) prints the message and the flag that sets the subject, and exits 2.
"""

from __future__ import annotations


class GroupRobustError(ValueError):
    """A user-caused error (bad input, unknown name, diverging run) with a one-line message.

    ``subject`` (optional) names what the error is about; see the module docstring. ``lists_choices``
    says the message already ends with the valid names (an unknown name): a front end then adds no
    hint of its own after them.
    """

    def __init__(self, message: str = "", *, subject: str | None = None, lists_choices: bool = False):
        super().__init__(message)
        self.subject = subject
        self.lists_choices = lists_choices


class DivergedError(GroupRobustError):
    """Training produced a non-finite loss; the run is marked failed with this reason."""
