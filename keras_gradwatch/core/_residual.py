"""Residual blocks of a functional model, for the depth profile's plot.

A block is what lies between a tensor read twice (a skip connection's
source) and the layer that joins the paths back (an `Add`, a
`Concatenate`, any layer called on several tensors sharing that source):
the layers on the paths from the one to the other. Found once per traced
measurement from the model's graph; recorded with each depth profile, so
that readers group layers without TensorFlow.
"""

import keras

from keras_gradwatch.core import _compat


def residual_blocks(model, units):
    """The block of each depth unit, as `{id(layer): number}`.

    Args:
        model: A Keras model (functional models have blocks; a Sequential
            or subclassed model has none, nor do the functional models
            nested in it).
        units: The depth units, in execution order: blocks are numbered
            1, 2, ... in the order of their first unit.

    Returns:
        A dict from `id(unit)` to its block's number, for the units inside
        a block (the innermost one when blocks nest).
    """
    spans = []
    _collect(model, spans)
    order = {id(unit): i for i, unit in enumerate(units)}
    innermost = {}
    for span in sorted(spans, key=len):
        for member in span:
            innermost.setdefault(member, span)
    # Only the blocks that keep a unit, numbered by their first unit.
    kept = {}
    for member, span in innermost.items():
        if member in order:
            kept.setdefault(id(span), []).append(order[member])
    numbers = {key: n for n, key in enumerate(sorted(kept, key=lambda k: min(kept[k])), 1)}
    return {member: numbers[id(span)] for member, span in innermost.items()
            if member in order and id(span) in numbers}


def _unit_ids(operation):
    """The depth units an operation of the graph holds (a nested model:
    all of its units)."""
    if isinstance(operation, keras.Model):
        return {id(layer) for layer in _compat.sublayers(operation) if layer.trainable_weights}
    if isinstance(operation, keras.layers.Layer) and operation.trainable_weights:
        return {id(operation)}
    return set()


def _collect(model, spans):
    """Appends the blocks of `model` (and of the models nested in it) to
    `spans`, each a frozenset of unit ids."""
    nodes = _compat.functional_nodes(model)
    producer = {}
    for index, node in enumerate(nodes):
        for tensor in node.output_tensors:
            producer[id(tensor)] = index
    ancestors = []  # per node, the nodes it reads, directly or not
    for node in nodes:
        found = set()
        for tensor in node.input_tensors:
            parent = producer.get(id(tensor))
            if parent is not None:
                found |= ancestors[parent] | {parent}
        ancestors.append(found)
    for node in nodes:
        parents = {producer[id(t)] for t in node.input_tensors if id(t) in producer}
        if len(parents) < 2:
            continue  # not a merge
        branches = [ancestors[p] | {p} for p in parents]
        common = set.intersection(*branches)
        if not common:
            continue  # separate inputs joined, no skip
        source = max(common)  # the latest fork: the skip's source
        inside = set.union(*branches) - ancestors[source] - {source}
        members = frozenset().union(*(_unit_ids(nodes[i].operation) for i in inside))
        if members:
            spans.append(members)
    for operation in {id(n.operation): n.operation for n in nodes}.values():
        if isinstance(operation, keras.Model) and operation is not model:
            _collect(operation, spans)
