"""One exception type for errors a user can fix: the CLI prints its message as one line and exits 1."""


class HessGPTError(Exception):
    """Bad input a user can fix (a path, a config key, a record number). The message names the offending value."""
