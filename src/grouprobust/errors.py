"""The project's exceptions: `GroupRobustError`, raised for every error a user can cause, and
`RunInterrupted`, raised when a signal stopped training after a checkpoint.

The message is one line naming the problem and the fix, in the library's own terms (parameter and
option names, never command-line flags). ``subject`` says what the error is about, so that a front
end can name its own way of setting it: ``"hparam:<name>"`` (a hyper-parameter), ``"data:<name>"``
(a dataset option) or the name of a run argument (``"select"``, ``"regime"``, ``"device"``,
``"stage1"``, ``"out"``, ``"executor"``, ``"workers"``, ``"address"``, ``"spec"`` ...). The command
line (`grouprobust.cli`) prints the message and the flag that sets the subject, and exits 2.
"""

from __future__ import annotations

import signal


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


class RunInterrupted(BaseException):
    """Training stopped on a signal after writing a checkpoint; re-running the same command resumes it.

    A `BaseException` like `KeyboardInterrupt`, so that code recording errors (a sweep's failed
    trials) never mistakes it for a failure. ``signum`` is the signal; ``epoch`` and ``step`` say
    where the run stopped (the epoch in progress, optimizer steps done).
    """

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum, self.epoch, self.step = signum, epoch, step
        name = signal.Signals(signum).name
        super().__init__(f"interrupted by {name} at epoch {epoch} step {step}; a checkpoint is saved: run the same "
                         "command again to resume")

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal: ``128 + signum`` (143 SIGTERM, 130 SIGINT)."""
        return 128 + self.signum
