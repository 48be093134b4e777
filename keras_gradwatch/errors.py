"""Exceptions raised by keras_gradwatch.

Every exception of the package inherits from `KerasGradwatchError` and from
the built-in exception a caller would catch for the same fault, so
`except ValueError` keeps working around code that uses the package.
"""


class KerasGradwatchError(Exception):
    """Base class of every exception raised by keras_gradwatch."""


class InvalidInputError(KerasGradwatchError, ValueError):
    """An argument, a model or a batch of data that the package cannot use.

    The message names the value received and what to pass instead.

    Example:

    >>> from keras_gradwatch.errors import InvalidInputError
    >>> issubclass(InvalidInputError, ValueError)
    True
    """
