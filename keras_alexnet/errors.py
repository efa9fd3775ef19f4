"""Errors about user input: one line that names the input and the fix."""


class UsageError(ValueError):
    """Bad user input (a flag, a path, a dataset string). Scripts print it as one line and exit 2."""
