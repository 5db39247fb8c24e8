"""Exceptions raised by the library.

Every error names the input that is wrong and, where it can, how to fix it, so that a
user reading a traceback knows what to change without opening the source.
"""

import signal


class UnclipError(Exception):
    """Base class of every error the library raises on purpose."""


class CheckpointError(UnclipError):
    """A checkpoint or model directory is missing, corrupt, or of the wrong version/shape."""


class ConfigError(UnclipError):
    """A configuration value is invalid (unknown key, wrong type, impossible size)."""


class DataError(UnclipError):
    """A dataset could not be built or read (unknown name, missing font, empty folder)."""


class InputError(UnclipError):
    """An argument passed by the user is invalid (bad image, prompt, size or scale)."""


class NumericalError(UnclipError):
    """A computation produced NaN or infinity (damaged weights, an extreme setting): never written as an image."""


class TrainingInterrupted(UnclipError):
    """A stop signal (SIGTERM, SIGUSR1, Ctrl-C) ended training at a checkpoint; ``--resume`` continues it.

    Attributes:
        signal_name: the signal, e.g. ``"SIGTERM"`` (or a note that another rank received it).
    """

    def __init__(self, message: str, signal_name: str) -> None:
        super().__init__(message)
        self.signal_name = signal_name

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as shells report a process ended by that signal (1 if unknown)."""
        number = getattr(signal, self.signal_name, None)
        return 128 + int(number) if number is not None else 1
