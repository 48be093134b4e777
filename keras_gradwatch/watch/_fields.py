"""Private: how a setting of `GradWatch` is written once.

A setting is a field of a frozen dataclass (`WatchSettings` or one of its
groups, `Measuring`, `Alerting`, `AutoClip`) made by `setting`: its
default, its check, what `run.json` records of it and its documentation.
`check_fields` runs the checks when the object is made, `args_doc` writes
the docstring's `Args` and `recorded` the object's part of `run.json`'s
`settings`.
"""

import dataclasses
import textwrap

from keras_gradwatch.core.errors import InvalidInputError

REQUIRED = dataclasses.MISSING


def positive(value, name, integer=False):
    """Raises `InvalidInputError` unless `value` is a positive number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise InvalidInputError(f"Received: {name}={value!r}. Pass {what}.")
    return value


def positive_float(value, name):
    return float(positive(value, name))


def positive_integer(value, name):
    return positive(value, name, integer=True)


def optional(check):
    """`check`, letting None through."""
    return lambda value, name: value if value is None else check(value, name)


def named(value):
    """A value as `run.json` holds it: a name, or its repr (a callable)."""
    return value if isinstance(value, (str, type(None))) else repr(value)


def setting(default, doc, check=None, record=False):
    """A field of a settings object.

    Args:
        default: The default (`REQUIRED` for none).
        doc: Its entry in the docstring's `Args` (indented by 4 spaces).
        check: `check(value, name)` returning the value to keep, raising
            `InvalidInputError` for a bad one; None for no check.
        record: What `run.json`'s `settings` holds of it: False (nothing),
            True (the value under the field's name), or a function of the
            settings object returning the entries.
    """
    metadata = {"doc": textwrap.dedent(doc).strip("\n"), "check": check, "record": record}
    return dataclasses.field(default=default, metadata=metadata)


def check_fields(settings):
    """Runs the checks of a frozen settings object's fields, keeping what
    they return (e.g. `1` as `1.0`)."""
    for field in dataclasses.fields(settings):
        check = field.metadata["check"]
        if check is not None:
            value = check(getattr(settings, field.name), field.name)
            object.__setattr__(settings, field.name, value)


def recorded(settings):
    """What `run.json`'s `settings` holds of `settings`, in field order."""
    entries = {}
    for field in dataclasses.fields(settings):
        record = field.metadata["record"]
        if record is True:
            entries[field.name] = getattr(settings, field.name)
        elif record:
            entries.update(record(settings))
    return entries


def args_doc(cls, indent="    "):
    """The `Args` section of a docstring, from the fields of `cls`."""
    lines = [indent + "Args:"]
    for field in dataclasses.fields(cls):
        first, *rest = field.metadata["doc"].split("\n")
        lines.append(f"{indent * 2}{field.name}: {first}")
        lines.extend(f"{indent * 3}{line}" if line else "" for line in rest)
    return "\n".join(lines)


def with_args(cls):
    """Class decorator: puts `args_doc(cls)` in place of `{fields}` in the
    docstring."""
    cls.__doc__ = cls.__doc__.replace("    {fields}", args_doc(cls))
    return cls


def group(cls, example):
    """The check of a field holding a settings group of class `cls`: None
    is the group's defaults (`example`: the fix an error suggests)."""

    def check(value, name):
        if value is None:
            return cls()
        if not isinstance(value, cls):
            raise InvalidInputError(
                f"Received: {name}={value!r}. Pass a keras_gradwatch.{cls.__name__}, "
                f"e.g. {name}={example}, or None for its defaults."
            )
        return value

    return check
