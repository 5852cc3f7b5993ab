"""The errors a user can fix, as opposed to bugs.

A launcher prints a `UserError` as one line (`error: ...`) and exits 1;
every other exception keeps its traceback. A `UserError` is a ValueError
(a bad config value, a malformed data row, an impossible combination) and a
`MissingInput` also a FileNotFoundError (a workdir, checkpoint or data file
that is not there), so callers that catch those keep working.
"""


class UserError(ValueError):
  """A problem with the run's inputs that the user can fix."""


class MissingInput(UserError, FileNotFoundError):
  """An input path (workdir, model, data file) that does not exist or is
  incomplete."""
