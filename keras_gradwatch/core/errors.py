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


class NotMeasurableError(InvalidInputError):
    """A model whose training objective a measurement cannot evaluate.

    Raised by `measure` (and caught by `GradWatch`, which records the
    reason and measures no more) when the loss the model trains on cannot
    be reproduced on the batch measured, e.g. a model compiled without a
    loss that adds none with `add_loss`. The message is the reason, in
    words, starting with "not measured:".

    Example:

    >>> from keras_gradwatch.errors import NotMeasurableError, InvalidInputError
    >>> issubclass(NotMeasurableError, InvalidInputError)
    True
    """


class RunDirectoryError(KerasGradwatchError, OSError):
    """A run folder that cannot be written, or records that cannot be read.

    Example:

    >>> from keras_gradwatch.errors import RunDirectoryError
    >>> issubclass(RunDirectoryError, OSError)
    True
    """


class RunFormatError(RunDirectoryError):
    """Run records in a format this version of the package cannot read.

    Raised when a run folder was written by a newer `keras_gradwatch`
    (its `run.json` names a higher record format): reading it could
    misread it, and continuing it could damage it.

    Example:

    >>> from keras_gradwatch.errors import RunDirectoryError, RunFormatError
    >>> issubclass(RunFormatError, RunDirectoryError)
    True
    """


class RunLockedError(RunDirectoryError):
    """A run folder that another `GradWatch` is writing (the message names
    the folder and the process holding its lock).

    Example:

    >>> from keras_gradwatch.errors import RunDirectoryError, RunLockedError
    >>> issubclass(RunLockedError, RunDirectoryError)
    True
    """


class RunRecordWarning(UserWarning):
    """Warning category of damaged run records that were skipped (the
    message names the file, the line and the field), and of a run folder
    that `GradWatch` stopped writing (a full disk, a vanished folder).
    """


class GradientAlertError(KerasGradwatchError, RuntimeError):
    """Raised by `GradWatch` for an alert whose action is `"raise"`.

    Attributes:
        alert: The `keras_gradwatch.Alert` that was raised.

    Example:

    >>> from keras_gradwatch.errors import GradientAlertError
    >>> issubclass(GradientAlertError, RuntimeError)
    True
    """

    def __init__(self, alert):
        super().__init__(alert.message)
        self.alert = alert


class GradientWarning(UserWarning):
    """Warning category of `GradWatch` alerts whose action is `"warn"`.

    Filter it like any warning, e.g.
    `warnings.simplefilter("error", GradientWarning)`.
    """
