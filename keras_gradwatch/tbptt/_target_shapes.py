"""Private: targets that a built-in loss would broadcast against the output.

Keras's element-wise losses (mean squared error, the crossentropies, ...)
first match the ranks of targets and outputs (`squeeze_or_expand_to_same_rank`
drops a trailing axis of 1 from the one with one axis more), then compare
them element by element. Shapes that still differ are broadcast: targets of
4 channels against an output of 1 give the loss of the one output against
every channel, and training goes on without a word. These functions tell such
shapes apart from those the loss reads as they are; they work on shapes and
loss identifiers only.

Only Keras's own losses are judged: a custom loss may read targets of any
shape on purpose (a target and a mask side by side, say), and a sparse loss
takes class ids of another shape than its output.
"""

import keras

# The built-in losses that compare targets and outputs element by element
# after Keras's rank matching: the function names (what `compile` takes as
# strings and functions) and the classes (exact types: a subclass may
# override `call`).
ELEMENTWISE_FUNCTIONS = (
    "mean_squared_error",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "kl_divergence",
    "poisson",
    "cosine_similarity",
    "hinge",
    "squared_hinge",
    "categorical_hinge",
)
ELEMENTWISE_CLASSES = (
    "MeanSquaredError",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredLogarithmicError",
    "Huber",
    "LogCosh",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "KLDivergence",
    "Poisson",
    "CosineSimilarity",
    "Hinge",
    "SquaredHinge",
    "CategoricalHinge",
)


def elementwise_loss_name(loss):
    """The name of a built-in element-wise loss, or None for any other.

    Args:
        loss: What was passed to `compile(loss=...)`: a string, a function,
            a `keras.losses.Loss`, or a list or dict of one of them (one
            output). Several losses (several outputs) give None.

    Returns:
        The loss's name (e.g. `"mean_squared_error"`) when it is one of
        Keras's element-wise losses, else None (not judged).
    """
    if isinstance(loss, (list, tuple)) and len(loss) == 1:
        loss = loss[0]
    elif isinstance(loss, dict) and len(loss) == 1:
        (loss,) = loss.values()
    if loss is None or isinstance(loss, (list, tuple, dict)):
        return None
    if isinstance(loss, str):
        if loss.lower() in ("crossentropy", "ce"):
            return None  # Keras picks binary, categorical or sparse from the shapes
        try:
            loss = keras.losses.get(loss)
        except ValueError:
            return None
    functions = {getattr(keras.losses, name, None): name for name in ELEMENTWISE_FUNCTIONS}
    if callable(loss) and not isinstance(loss, keras.losses.Loss):
        return functions.get(loss)
    classes = {getattr(keras.losses, name, None) for name in ELEMENTWISE_CLASSES}
    if type(loss) in classes:
        return functions.get(getattr(loss, "fn", None))
    return None


def rank_matched(y_shape, output_shape):
    """The shapes Keras's losses compare, after `squeeze_or_expand_to_same_rank`.

    Args:
        y_shape, output_shape: Tuples (None for an unknown size).

    Returns:
        `(y_shape, output_shape)` as the loss sees them.
    """
    y_shape, output_shape = tuple(y_shape), tuple(output_shape)
    if len(y_shape) == len(output_shape) + 1 and y_shape[-1] == 1:
        if len(output_shape) == 1:
            output_shape += (1,)
        else:
            y_shape = y_shape[:-1]
    if len(output_shape) == len(y_shape) + 1 and output_shape[-1] == 1:
        if len(y_shape) == 1:
            y_shape += (1,)
        else:
            output_shape = output_shape[:-1]
    return y_shape, output_shape


def broadcasts(y_shape, output_shape):
    """Whether an element-wise loss would not read targets as the output.

    Axis 0 (the batch) is not compared: targets hold all the rows, the
    output one batch. Unknown sizes (None) match any size.

    Args:
        y_shape, output_shape: Tuples, batch axis first.

    Returns:
        True when, after rank matching, the ranks or a known size differ:
        Keras would broadcast the two (or fail inside the first step).
    """
    y_shape, output_shape = rank_matched(y_shape, output_shape)
    if len(y_shape) != len(output_shape):
        return True
    return any(
        a is not None and b is not None and a != b
        for a, b in zip(y_shape[1:], output_shape[1:])
    )
