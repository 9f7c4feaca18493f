"""The package's error for bad input from its user.

:class:`InputError` marks a problem the user can fix: a file that is missing,
of the wrong kind or corrupt, a setting out of range, a folder that cannot be
written. The binaries print it as one line naming the flag or file; any other
exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user (a file, folder or setting); the message names it."""


class Interrupted(Exception):
    """Long work stopped early, on a signal or at a deadline; what it finished is saved,
    and calling it again continues from there. Not an error: nothing is recorded as
    measured."""
