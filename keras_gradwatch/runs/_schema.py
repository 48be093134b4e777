"""Private: the one definition of each kind of run record (fields and types).

`records` checks every record it reads against these definitions, so a
value of the wrong type (`"step": "abc"`, `"grad_norm": "xyz"`) is a
damaged record, named by file, line and field, and never a `TypeError`
deep inside a reader. The tests check every record a real run writes
against the same definitions (`check(..., strict=True)`), so the writer and
the readers cannot drift apart.

A field left out of a record is fine (older records lack newer fields);
a field a definition does not name is kept unchecked (a newer writer's),
except in strict mode. None is allowed wherever a field is not required.
"""

# Non-finite numbers as `records.encode` writes them.
NONFINITE = frozenset(("NaN", "Infinity", "-Infinity"))


def _is_int(value):
    return type(value) is int  # noqa: E721 - bool is no count (and this is fast)


def _is_number(value):
    kind = type(value)
    if kind is float or kind is int:  # noqa: E721 - bool is no number
        return True
    return kind is str and value in NONFINITE


def _is_number_map(value):
    return isinstance(value, dict) and all(
        v is None or _is_number(v) for v in value.values()
    )


def _is_int_map(value):
    return isinstance(value, dict) and all(_is_int(v) for v in value.values())


# Each type: (test, what it is in words).
INT = (_is_int, "an integer")
NUMBER = (_is_number, "a number")
STR = (lambda v: isinstance(v, str), "a string")
BOOL = (lambda v: isinstance(v, bool), "true or false")
DICT = (lambda v: isinstance(v, dict), "an object")
LIST = (lambda v: isinstance(v, list), "a list")
NUMBER_MAP = (_is_number_map, "an object of numbers")
INT_MAP = (_is_int_map, "an object of integers")

# The statistics of one measured layer (`measurements.jsonl`, "layers").
LAYER = {
    "site": STR,
    "decay_rate": NUMBER,
    "horizon": NUMBER,
    "truncation_bias": NUMBER,
    "suggested_window": NUMBER,
    "lag0": NUMBER,
}

# Record kinds: field -> (type, required).
STEP = {
    "step": (INT, True),
    "epoch": (INT, False),
    "loss": (NUMBER, False),
    "grad_norm": (NUMBER, False),
    "skipped_updates": (INT, False),
    "window": (INT, False),
    "update_ratios": (NUMBER_MAP, False),
    "updates": (INT, False),
    "clip": (NUMBER, False),
    "clipped_updates": (INT, False),
    "lr": (NUMBER, False),
}
MEASUREMENT = {
    "index": (INT, False),
    "step": (INT, True),
    "epoch": (INT, False),
    "reason": (STR, False),
    "time": (NUMBER, False),
    "seconds": (NUMBER, False),
    "traced": (BOOL, False),
    "length": (INT, False),
    "sequences": (INT, False),
    "loss_steps": ((lambda v: isinstance(v, (str, int)) and not isinstance(v, bool),
                    "a string or an integer"), False),
    "backprop": (INT, False),
    "window": (INT, False),  # format 1 before "backprop"
    "global_norm": (NUMBER, False),
    "layer_norms": (NUMBER_MAP, False),
    "profiles": (STR, False),
    "suspect": (STR, False),
    "layers": (DICT, False),
    "depth": (DICT, False),  # `depth.DepthProfile.record()`
}
ALERT = {
    "kind": (STR, True),
    "step": (INT, False),
    "epoch": (INT, False),
    "layer": (STR, False),
    "value": (NUMBER, False),
    "threshold": (NUMBER, False),
    "message": (STR, False),
    "signal": (STR, False),
    "suppressed": (INT, False),
    "evidence": (DICT, False),
}
SUMMARY = {
    "status": (STR, False),
    "steps": (INT, False),
    "epochs": (INT, False),
    "measurements": (INT, False),
    "measured_steps": (INT, False),
    "suspect_measurements": (INT, False),
    "suspect_reason": (STR, False),
    "measured_at_step": (INT, False),
    "layers": (DICT, False),
    "median_grad_norm": (NUMBER, False),
    "suggested_clipnorm": (NUMBER, False),
    "skipped_updates": (INT, False),
    "window": (INT, False),
    "update_ratios": (NUMBER_MAP, False),
    "update_ratio_step": (INT, False),
    "clip": (NUMBER, False),
    "clipped_updates": (INT, False),
    "alerts": (INT_MAP, False),
    "alerts_reported": (INT, False),
    "updated": (NUMBER, False),
    "auto_window": (DICT, False),
    "measurement_error": (STR, False),
    "own_time": (NUMBER_MAP, False),
    "rollbacks": (LIST, False),
    "clip_note": (STR, False),
    "recording_error": (STR, False),
    "depth": (DICT, False),  # the latest depth finding (`depth.finding_text`)
}
RUN = {
    "format": (INT, False),
    "writer": (STR, False),
    "model": (STR, False),
    "tbptt": (DICT, False),
    "settings": (DICT, False),
    "fits": (LIST, False),
    "optimizer": (DICT, False),
}


# The fields each definition requires.
_REQUIRED = {id(schema): tuple(field for field, (_, required) in schema.items() if required)
             for schema in (STEP, MEASUREMENT, ALERT, SUMMARY, RUN)}


def check(record, schema, strict=False):
    """Why `record` does not fit `schema`, in words, or None if it does.

    Args:
        record: A value read from a record file.
        schema: One of the definitions of this module.
        strict: Also refuse fields the definition does not name.

    Returns:
        None, or e.g. "field 'step': expected an integer, received 'abc'".

    Example:

    >>> check({"step": "abc"}, STEP)
    "field 'step': expected an integer, received 'abc'"
    >>> check({"step": 3, "loss": "NaN"}, STEP) is None
    True
    """
    if not isinstance(record, dict):
        return f"expected a JSON object, received {_short(record)}"
    for field, value in record.items():  # the record's fields: fewer than the definition's
        spec = schema.get(field)
        if spec is None:
            if strict:
                return f"field {field!r} is not in the record's definition"
            continue
        if value is not None and not spec[0][0](value):
            return f"field {field!r}: expected {spec[0][1]}, received {_short(value)}"
    for field in _REQUIRED[id(schema)]:
        if record.get(field) is None:
            return f"field {field!r} is missing"
    if schema is MEASUREMENT and isinstance(record.get("layers"), dict):
        for name, values in record["layers"].items():
            problem = _check_layer(values)
            if problem:
                return f"field 'layers' ({name!r}): {problem}"
    return None


def _check_layer(values):
    if not isinstance(values, dict):
        return f"expected an object, received {_short(values)}"
    for field, (test, words) in LAYER.items():
        value = values.get(field)
        if value is not None and not test(value):
            return f"field {field!r}: expected {words}, received {_short(value)}"
    return None


def _short(value):
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

