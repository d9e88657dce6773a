"""The base of every mistake a user can fix (a bad path, missing data, an impossible setting).

Lesson code in ``modules/`` and ``datamodules/`` derives its own errors from ``ExperimentError``, so the
command shows any of them as one line without knowing each type. This module imports nothing, so any
package may import it.
"""


class ExperimentError(Exception):
    """A mistake the user can fix; the command prints its message as one ``error:`` line, exit status 2."""
