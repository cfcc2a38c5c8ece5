"""Errors about the user's input: the CLI prints their message (which names the file or option
and the problem) instead of a traceback. Anything else is a bug and keeps its traceback."""


class InputError(ValueError):
    """Bad input: a file, an option or a value the user gave."""
