"""The mistakes a user can fix (a bad path, missing data, an impossible setting), as exception types.

The command shows any ``ExperimentError`` as one ``error:`` line with exit status 2, so a lesson's own
errors derive from it (or from one of these) and need no listing anywhere.
"""


class ExperimentError(Exception):
    """A mistake the user can fix; the command prints its message as one ``error:`` line, exit status 2."""


class DataNotFoundError(ExperimentError, FileNotFoundError):
    """A dataset's files are absent or unreadable; the message names the folder, the files and the fix."""


class DataConfigError(ExperimentError, ValueError):
    """Data settings that cannot work with the data found (a split larger than the dataset, mixed sizes)."""


class InputShapeError(ExperimentError, ValueError):
    """Inputs of a shape the network cannot take; the message says which shape it needs and how to get it."""
