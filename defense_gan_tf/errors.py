"""The package's error for bad input from its user.

:class:`InputError` marks a problem the user can fix: a file that is missing,
of the wrong kind or corrupt, a setting out of range, a folder that cannot be
written. The binaries print it as one line naming the flag or file; any other
exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
    """Bad input from the user (a file, folder or setting); the message names it, and
    ``fields`` the settings it concerns, as the configs spell them (``num_tests``), if
    any: a binary puts the flag beside each."""

    def __init__(self, message: str, fields=()):
        super().__init__(message)
        self.fields = tuple(fields)


class ConfigError(InputError):
    """A setting out of range or of the wrong kind, raised by the config dataclasses'
    own checks; ``fields`` names it (``projection.iterations``, ``num_tests``), the
    message says what is wrong."""

    def __init__(self, fields, message: str):
        super().__init__(message, (fields,) if isinstance(fields, str) else fields)


class Interrupted(Exception):
    """Long work stopped early, on a signal or at a deadline; what it finished is saved,
    and calling it again continues from there. Not an error: nothing is recorded as
    measured."""
