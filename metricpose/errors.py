"""Errors the CLI reports in one line instead of a traceback: bad input (the message names the
file or option and the problem) and a training stopped by a signal. Anything else is a bug and
keeps its traceback."""

import signal
from pathlib import Path


class InputError(ValueError):
    """Bad input: a file, an option or a value the user gave."""


class TrainingInterrupted(Exception):
    """SIGTERM or SIGINT stopped training after a step; last.ckpt holds that step."""

    def __init__(self, signal_number: int, step: int, checkpoint: Path) -> None:
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint
        super().__init__(
            f"stopped by {signal.Signals(signal_number).name} after step {step}; {checkpoint} "
            "holds it: the same command with --resume continues"
        )

    def __reduce__(self) -> tuple:  # crosses process boundaries (the demo's worker pool)
        return type(self), (self.signal_number, self.step, self.checkpoint)
