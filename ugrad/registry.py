"""Name -> implementation tables of the families, and their one lookup.

Every family (coefficients, rewards, sources, tasks, model presets, ...) is a
plain dict. `lookup` is the single place where an unknown name becomes an
error that lists the valid ones; `register` is how code outside the package
adds an entry (see `ugrad.register_coefficient` and friends).
"""

from typing import Collection, Mapping, MutableMapping, TypeVar

from ugrad import errors

T = TypeVar("T")


def lookup(family: Collection, what: str, name: str):
  """`family[name]`, or a ValueError naming the valid entries.

  Args:
    family: a table (e.g. `ugrad.coefficients.COEFFICIENTS`) or a sequence
      of valid names (e.g. the KL estimators).
    what: what an entry is, for the message ("coefficient", "reward", ...).
    name: the requested entry.

  Returns:
    The table's entry, or `name` itself for a sequence of names.

  Raises:
    ValueError: "unknown WHAT 'NAME'; valid: a, b, c" (in table order).
  """
  if name not in family:
    raise errors.UserError(
        f"unknown {what} {name!r}; valid: " f"{', '.join(map(str, family))}"
    )
  return family[name] if isinstance(family, Mapping) else name


def register(
    family: MutableMapping[str, T],
    what: str,
    name: str,
    value: T,
    *,
    replace: bool = False,
) -> T:
  """Adds `value` to `family` under `name`.

  Args:
    family: the table to extend.
    what: what an entry is, for the message.
    name: the new entry's name.
    value: the implementation.
    replace: allow replacing an existing entry (off: a typo that shadows a
      built-in method is an error, not a silent override).

  Returns:
    `value`, so registration can be used inline.

  Raises:
    ValueError: when `name` is taken and `replace` is False, or empty.
  """
  if not name or not isinstance(name, str):
    raise errors.UserError(
        f"a {what} needs a non-empty string name, got {name!r}"
    )
  if name in family and not replace and family[name] is not value:
    raise errors.UserError(
        f"{what} {name!r} is already registered; pass "
        "replace=True to override it"
    )
  family[name] = value
  return value
