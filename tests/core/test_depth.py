"""The gradient across depth: the depth profile (exact on a linear network),
its detectors on numbers alone, its plot, and GradWatch on deep networks
that are healthy (no alert) and failing (one alert)."""

import html
import json
import math

import keras
import numpy as np
import pytest

from keras_gradwatch import GradWatch
from keras_gradwatch import measurement
from keras_gradwatch import plots
from keras_gradwatch import records
from keras_gradwatch.core._detectors.base import Evidence
from keras_gradwatch.core._detectors.depth import MIN_DEPTH_GROWTH
from keras_gradwatch.core._detectors.depth import DepthGrowth
from keras_gradwatch.core._detectors.depth import DepthVanishing
from keras_gradwatch.core._detectors.trend import Trend
from keras_gradwatch.core._detectors.vanishing import MIN_UPDATES
from keras_gradwatch.depth import DepthProfile

STALLED = Trend(3, "loss", 0.6931, 0.6930, 2, True)
FALLING = Trend(3, "loss", 0.40, 0.60, 2, False)


def depth_of(model, x, y):
    """The depth profile of one measurement, as GradWatch takes it."""
    return measurement._measure(
        model, x, y, loss=None, loss_steps="last", window=None, threshold=0.01,
        tolerance=0.05, gradient_norms=True, profiles=None,
    ).depth


# The depth profile: exact on a linear network --------------------------------


def test_linear_network_scales_the_gradient_by_a_known_factor_per_layer():
    # Every layer is c * I without bias: the gradient reaching layer k is
    # c ** (L - 1 - k) times the output's, and every layer's weight gradient
    # is c ** (L - 1) x^T g: the same for all, as are the weights' norms.
    width, count, c = 4, 6, 0.5
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, width)).astype("float32")
    y = rng.normal(size=(8, width)).astype("float32")
    identity = keras.initializers.Identity(gain=c)
    inner = keras.Sequential(
        [keras.Input((width,))]
        + [keras.layers.Dense(width, use_bias=False, kernel_initializer=identity,
                              name=f"inner_{i}") for i in range(3)],
        name="nested",
    )
    inputs = keras.Input((width,))
    hidden = keras.layers.Dense(width, use_bias=False, kernel_initializer=identity,
                                name="first")(inputs)
    hidden = keras.layers.Activation("linear", name="no_weights")(hidden)
    hidden = inner(hidden)
    hidden = keras.layers.Dense(width, use_bias=False, kernel_initializer=identity,
                                name="fifth")(hidden)
    outputs = keras.layers.Dense(width, use_bias=False, kernel_initializer=identity,
                                 name="out")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss="mse")
    profile = depth_of(model, x, y)
    # Nested layers flattened in execution order; no layer without weights.
    assert profile.layers == ("first", "inner_0", "inner_1", "inner_2", "fifth", "out")
    assert profile.outputs == (False,) * 5 + (True,)
    assert profile.reference == 4
    # The output's gradient per row: d(rows * mean MSE)/d(out)_i = 2 (out_i - y_i) / width.
    out = x * c**count
    top = np.mean(np.linalg.norm(2 * (out - y) / width, axis=1))
    expected = top * c ** np.arange(count - 1, -1, -1.0)
    np.testing.assert_allclose(profile.output_grad, expected, rtol=1e-5)
    np.testing.assert_allclose(profile.fractions(), c ** np.arange(4, -2, -1.0), rtol=1e-5)
    # The weights' gradient of the batch-mean loss: c^(L-1) x^T g / rows, for every layer.
    g = 2 * (out - y) / (width * len(x))
    weight = np.linalg.norm(c ** (count - 1) * x.T @ g)
    np.testing.assert_allclose(profile.weight_grad, weight, rtol=1e-5)
    np.testing.assert_allclose(profile.weight_norm, c * math.sqrt(width), rtol=1e-6)
    np.testing.assert_allclose(profile.weight_ratio, weight / (c * math.sqrt(width)), rtol=1e-5)


def test_depth_profile_round_trips_through_a_record():
    profile = DepthProfile(("a", "b", "c"), np.array([1e-12, 0.5, 2.0]),
                           np.array([np.nan, 1.0, 0.1]), np.array([0.0, 2.0, 1.0]),
                           (False, False, True))
    back = DepthProfile.from_record(json.loads(json.dumps(records.encode(profile.to_record()))))
    assert back.layers == profile.layers and back.outputs == profile.outputs
    np.testing.assert_array_equal(back.output_grad, profile.output_grad)
    assert math.isnan(back.weight_grad[0]) and math.isnan(back.weight_ratio[0])
    assert DepthProfile.from_record(None) is None


# The detectors, on numbers alone -----------------------------------------------


def chain(factor, count=20, output_grad=None):
    """A profile whose gradient is multiplied by `factor` per layer going back."""
    grads = factor ** np.arange(count - 1, -1, -1.0)
    if output_grad is not None:
        grads[-1] = output_grad
    return DepthProfile(tuple(f"d{i}" for i in range(count)), grads, grads.copy(),
                        np.ones(count), (False,) * (count - 1) + (True,))


def seen(profile, step=300, epoch=3, updates=300, trend=STALLED):
    return Evidence("measurement", step, epoch, updates=updates, depth=profile, trend=trend)


def test_vanishing_waits_for_the_early_step_rule_and_a_stalled_loss():
    detector = DepthVanishing(fraction=1e-3, patience=3)
    collapsed = chain(0.25)  # 0.25 ** 18 = 1.5e-11 of the reference at the first layer
    # Epoch 0, then too few updates: counted toward the streak, not reported.
    assert detector.check(seen(collapsed, step=1, epoch=0, updates=1, trend=None)) is None
    assert detector.check(seen(collapsed, step=100, epoch=1, updates=100)) is None
    assert detector.check(seen(collapsed, updates=MIN_UPDATES, trend=FALLING)) is None
    finding = detector.check(seen(collapsed, updates=MIN_UPDATES))
    assert finding.kind == "vanishing" and finding.layer == "d0" and finding.signal == "depth"
    assert finding.value == pytest.approx(0.25**18)
    assert finding.evidence["layers"] == 14  # d0..d13: 0.25 ** 5 < 1e-3 < 0.25 ** 4
    assert "1.5e-11" in finding.message and "'d18'" in finding.message
    assert "he_normal" in finding.remedy
    # Once per epoch verdict.
    assert detector.check(seen(collapsed, updates=MIN_UPDATES + 10)) is None


def test_vanishing_needs_patience_and_both_signals():
    detector = DepthVanishing(fraction=1e-3, patience=3)
    collapsed = chain(0.25)
    for _ in range(2):
        assert detector.check(seen(collapsed)) is None
    assert detector.check(seen(chain(0.9))) is None  # the streak restarts
    assert detector.check(seen(collapsed)) is None
    # The weights' relative gradient is not small: no verdict (an input scaled up).
    grads = collapsed.output_grad
    mixed = DepthProfile(collapsed.layers, grads, np.ones(20), np.ones(20), collapsed.outputs)
    patient = DepthVanishing(fraction=1e-3, patience=1)
    assert patient.check(seen(mixed)) is None
    assert patient.check(seen(collapsed)) is not None


def test_the_output_layer_is_no_reference():
    # A saturated softmax output: dL/dp = 1/p is huge at the output, flat within.
    flat = chain(1.0, output_grad=1e6)
    patient = DepthVanishing(fraction=1e-3, patience=1)
    assert patient.check(seen(flat)) is None
    assert DepthGrowth().check(seen(flat)) is None
    # Too shallow to compare (the first layer is the reference): nothing.
    assert DepthGrowth().check(seen(chain(1e3, count=2))) is None


def test_growth_across_depth_is_reported_at_once_with_its_numbers():
    detector = DepthGrowth()
    assert detector.check(seen(chain(1.4), step=0, epoch=0, updates=0)) is None  # 1.4 ** 18 = 427
    finding = detector.check(seen(chain(1.6), step=0, epoch=0, updates=0))
    assert finding.kind == "exploding" and finding.layer == "d0"
    assert finding.value == pytest.approx(1.6**18) and finding.threshold == MIN_DEPTH_GROWTH
    assert "4.72e+03x" in finding.message and "1.6x per layer" in finding.message
    grads = chain(1.6).output_grad
    one_signal = DepthProfile(chain(1.6).layers, grads, np.ones(20), np.ones(20),
                              chain(1.6).outputs)
    assert detector.check(seen(one_signal)) is None


# The plot ------------------------------------------------------------------------


@pytest.mark.parametrize("count", [5, 200])
def test_depth_plot_reads_with_few_and_many_layers(tmp_path, count):
    writer = records.RunWriter(tmp_path)
    writer.open()
    writer.write_json(records.RUN, {"settings": {"vanishing_fraction": 1e-3}})
    for index, step in enumerate((0, 50, 100)):
        profile = chain(0.3 + 0.1 * index, count=count)
        writer.append(records.MEASUREMENTS, {"index": index, "step": step,
                                             "depth": profile.to_record()})
    writer.append(records.ALERTS, {"kind": "vanishing", "step": 100, "layer": "d0",
                                   "signal": "depth", "message": "m"})
    writer.close()
    run = records.load_run(tmp_path)
    steps, profiles, names = plots.depth_series(run)
    assert steps == [0, 50, 100] and names[0] == f"d{count - 1}" and names[-1] == "d0"
    path = plots.plot_depth(run)
    assert path.name == "depth_profile.png" and path.read_bytes()[:4] == b"\x89PNG"
    assert "depth_profile.png" in [p.name for p in plots.plot_all(run)]
    assert "depth_profile.png" in run.summary_html()


def test_layer_ticks_are_thinned_past_forty_layers():
    from matplotlib.figure import Figure

    ax = Figure().subplots()
    plots._layer_ticks(ax, [f"layer_{i}" for i in range(200)])
    assert len(ax.get_xticks()) <= plots.MAX_LAYER_TICKS
    ax = Figure().subplots()
    plots._layer_ticks(ax, [f"layer_{i}" for i in range(5)])
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"layer_{i}" for i in range(5)]


# GradWatch on deep networks ------------------------------------------------------


def binary_task(rows=1024, features=20):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype("float32")
    return x, (x[:, :10].sum(axis=1) > 0).astype("float32")


def mlp(activation, initializer, depth=20, units=32):
    model = keras.Sequential(
        [keras.Input((20,))]
        + [keras.layers.Dense(units, activation=activation, kernel_initializer=initializer)
           for _ in range(depth - 1)]
        + [keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def watched(model, x, y, folder, epochs, batch_size=16):
    # overhead=100: every step the schedule prefers is measured, whatever
    # the machine's speed (the verdicts are tested, not the budget).
    watch = GradWatch(folder, plots=None, overhead=100.0)
    history = model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0,
                        callbacks=[watch])
    found = [json.loads(line) for line in (folder / "measurements.jsonl").open()]
    fractions = [DepthProfile.from_record(m["depth"]).fractions()[0] for m in found]
    return watch, history, fractions


def depth_alerts(watch):
    return [a for a in watch.alerts if a.signal == "depth"]


def test_sigmoid_mlp_gets_a_vanishing_alert_after_the_early_step_rule(tmp_path):
    x, y = binary_task()
    model = mlp("sigmoid", "glorot_uniform")
    with pytest.warns(Warning, match="vanishes across depth"):
        watch, history, fractions = watched(model, x, y, tmp_path, epochs=5)
    assert max(history.history["accuracy"]) < 0.56  # chance
    assert max(fractions) < 1e-9
    first = depth_alerts(watch)[0]
    assert first.kind == "vanishing" and first.layer == model.layers[0].name
    # The first epoch the early-step rule allows (64 updates per epoch: 200 in epoch 3).
    assert first.epoch == MIN_UPDATES // 64 and first.step >= MIN_UPDATES
    assert f"{first.value:.2g}" in first.message


def test_relu_he_twin_gets_no_depth_alert(tmp_path):
    x, y = binary_task()
    watch, history, fractions = watched(mlp("relu", "he_normal"), x, y, tmp_path, epochs=4)
    assert history.history["accuracy"][-1] > 0.8
    assert depth_alerts(watch) == [] and not any(a.kind == "vanishing" for a in watch.alerts)
    assert min(fractions) > 1e-2 and max(fractions) < 1e2


def test_too_large_initialisation_gets_an_exploding_alert(tmp_path):
    x, y = binary_task(rows=256)
    big = keras.initializers.RandomNormal(stddev=1.0, seed=1)
    model = mlp("tanh", big)
    with pytest.warns(Warning, match="grows across depth"):
        watch, _, fractions = watched(model, x, y, tmp_path, epochs=1)
    first = depth_alerts(watch)[0]
    assert first.kind == "exploding" and first.step == 0
    assert first.layer == model.layers[0].name
    assert first.value == pytest.approx(fractions[0], rel=1e-6) and first.value >= 1e3


def residual_cnn():
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    for _ in range(3):
        branch = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(h)
        branch = keras.layers.BatchNormalization()(branch)
        branch = keras.layers.Activation("relu")(branch)
        branch = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(branch)
        branch = keras.layers.BatchNormalization()(branch)
        h = keras.layers.Activation("relu")(keras.layers.Add()([h, branch]))
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def stacked_lstm():
    model = keras.Sequential([
        keras.Input((20, 4)),
        keras.layers.LSTM(16, return_sequences=True),
        keras.layers.LSTM(16, return_sequences=True),
        keras.layers.LSTM(16),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.slow  # ~250 updates of each network
@pytest.mark.parametrize("name", ["residual_cnn", "stacked_lstm"])
def test_healthy_deep_networks_get_no_depth_alert(tmp_path, name):
    rng = np.random.default_rng(0)
    if name == "residual_cnn":
        model = residual_cnn()
        x = rng.normal(size=(512, 12, 12, 3)).astype("float32")
        y = (x[..., 0].mean(axis=(1, 2)) > 0).astype("int32") + 2 * (x[:, :6].mean(
            axis=(1, 2, 3)) > 0)
    else:
        model = stacked_lstm()
        x = rng.normal(size=(512, 20, 4)).astype("float32")
        y = x[:, :, 0].sum(axis=1, keepdims=True) / 5
    watch, _, fractions = watched(model, x, y, tmp_path, epochs=8)
    assert depth_alerts(watch) == []
    assert min(fractions) > 1e-3 and max(fractions) < 1e3


# Residual blocks, the cost's fused reductions, the summary ------------------------


def residual_mlp(blocks=20, units=4):
    """A stem, `blocks` residual blocks of two Dense layers, a head."""
    inputs = keras.Input((6,))
    h = keras.layers.Dense(units, name="stem")(inputs)
    for b in range(blocks):
        branch = keras.layers.Dense(units, activation="relu", name=f"b{b}_in")(h)
        branch = keras.layers.Dense(units, name=f"b{b}_out")(branch)
        h = keras.layers.Add(name=f"add_{b}")([h, branch])
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(h))
    model.compile(optimizer="sgd", loss="mse")
    return model


def x_tick_texts(figure):
    """The bottom axis's visible x tick labels and whether any two touch."""
    renderer = figure.canvas.get_renderer()
    ax = figure.axes[1]
    shown = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
    boxes = [t.get_window_extent(renderer) for t in shown]
    touch = any(boxes[i].overlaps(boxes[j])
                for i in range(len(boxes)) for j in range(i + 1, len(boxes)))
    return [t.get_text() for t in shown], touch


def drawn_ticks(monkeypatch, run):
    seen, save = [], plots._save

    def spy(figure, path):
        seen.append(x_tick_texts(figure))
        return save(figure, path)

    monkeypatch.setattr(plots, "_save", spy)
    assert plots.plot_depth(run) is not None
    return seen[0]


def depth_run(folder, profile):
    writer = records.RunWriter(folder)
    writer.open()
    for index, step in enumerate((0, 10)):
        writer.append(records.MEASUREMENTS, {"index": index, "step": step,
                                             "depth": profile.to_record()})
    writer.close()
    return records.load_run(folder)


def test_residual_blocks_are_recorded_and_drawn_one_label_each(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6)).astype("float32")
    profile = depth_of(residual_mlp(), x, rng.normal(size=(8, 1)).astype("float32"))
    expected = ((None,) + tuple(b + 1 for b in range(20) for _ in range(2)) + (None,))
    assert profile.blocks == expected and len(profile) == 42
    back = DepthProfile.from_record(json.loads(json.dumps(records.encode(profile.to_record()))))
    assert back.blocks == expected
    texts, touch = drawn_ticks(monkeypatch, depth_run(tmp_path, profile))
    # Output (left) to input (right): the head, the 20 blocks, the stem.
    assert texts == ["head"] + [f"block {b} (2 layers)" for b in range(20, 0, -1)] + ["stem"]
    assert not touch


def test_five_layers_are_named_one_by_one_without_blocks(tmp_path, monkeypatch):
    x, y = binary_task(rows=8)
    profile = depth_of(mlp("relu", "he_normal", depth=5), x, y)
    assert profile.blocks == (None,) * 5
    assert "blocks" not in profile.to_record()  # records stay as they were
    texts, touch = drawn_ticks(monkeypatch, depth_run(tmp_path, profile))
    assert texts == list(reversed(profile.layers)) and not touch


def test_nested_and_concatenated_branches_group_their_layers():
    # Two blocks: a Concatenate joining two branches of one tensor, and a
    # nested functional model holding a residual block of its own.
    inner_in = keras.Input((4,))
    inner_branch = keras.layers.Dense(4, name="inner_branch")(inner_in)
    inner = keras.Model(inner_in, keras.layers.Add()([inner_in, inner_branch]), name="inner")
    inputs = keras.Input((4,))
    h = keras.layers.Dense(4, name="stem")(inputs)
    left = keras.layers.Dense(4, name="left")(h)
    right = keras.layers.Dense(4, name="right_1")(keras.layers.Dense(4, name="right_0")(h))
    h = keras.layers.Dense(4, name="joined")(keras.layers.Concatenate()([left, right]))
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(inner(h)))
    model.compile(optimizer="sgd", loss="mse")
    x = np.ones((2, 4), "float32")
    profile = depth_of(model, x, np.ones((2, 1), "float32"))
    blocks = dict(zip(profile.layers, profile.blocks))
    assert blocks["stem"] is None and blocks["joined"] is None and blocks["head"] is None
    assert blocks["left"] == blocks["right_0"] == blocks["right_1"] == 1
    assert blocks["inner_branch"] == 2


def test_fused_square_sums_match_each_tensor_reduced_alone():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    shapes = [(3, 4), (3, 4), (3, 2, 5), (3, 4), (3,), (3, 5000)]  # last: alone (large)
    values = [rng.normal(size=s).astype("float32") for s in shapes]
    owners = [2, 0, 1, 1, 3, 0]  # several per owner, out of order
    got = measurement._segment_square_sums([tf.constant(v) for v in values], owners, 4,
                                           rows=True).numpy()
    per_row = [np.sum(v.reshape(3, -1) ** 2, axis=1) for v in values]
    expected = np.stack([sum(p for p, o in zip(per_row, owners) if o == k) for k in range(4)])
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    whole = measurement._segment_square_sums([tf.constant(v) for v in values[:3]], [1, 0, 2],
                                             3).numpy()
    np.testing.assert_allclose(whole, [np.sum(values[i] ** 2) for i in (1, 0, 2)], rtol=1e-5)


def test_the_summary_states_the_latest_depth_finding(tmp_path):
    from keras_gradwatch import cli
    from keras_gradwatch import report

    writer = records.RunWriter(tmp_path)
    writer.open()
    for index, factor in enumerate((0.5, 0.25)):
        profile = chain(factor, count=5)
        writer.append(records.MEASUREMENTS, {"index": index, "step": 10 * index,
                                             "depth": profile.to_record()})
    writer.close()
    run = records.load_run(tmp_path)
    finding = records.summarize(run)["depth"]
    # chain(0.25): the first layer gets 0.25 ** 3 of the reference (d3), both signals.
    assert finding["step"] == 10 and finding["first"] == "d0" and finding["reference"] == "d3"
    assert finding["gradient_fraction"] == pytest.approx(0.25**3)
    assert finding["weight_ratio_fraction"] == pytest.approx(0.25**3)
    line = ("step 10: first layer 'd0' gets 0.016 of the gradient reaching 'd3' (the "
            "reference, last before the output) and 0.016 of its ‖∇w‖/‖w‖ (5 layers)")
    assert f"Across depth (latest): {line}." in cli.summary_text(run)
    assert html.escape(line) in report.render(run, [])
    # A run without depth profiles: no field, no line.
    empty = records.RunWriter(tmp_path / "none")
    empty.open()
    empty.append(records.STEPS, {"step": 1, "loss": 1.0})
    empty.close()
    plain = records.load_run(tmp_path / "none")
    assert records.summarize(plain)["depth"] is None
    assert "Across depth" not in cli.summary_text(plain)


@pytest.mark.parametrize("count, size", [(200, None), (200, 3), (12, 2)])
def test_many_layers_and_blocks_keep_labels_apart(tmp_path, monkeypatch, count, size):
    # Blocks of `size` layers after a stem layer, up to the head (none: plain).
    base = chain(0.9, count=count)
    blocks = (None,) + tuple(1 + i // size if size else None for i in range(count - 2)) + (None,)
    profile = DepthProfile(base.layers, base.output_grad, base.weight_grad, base.weight_norm,
                           base.outputs, blocks if size else ())
    texts, touch = drawn_ticks(monkeypatch, depth_run(tmp_path, profile))
    assert not touch and len(texts) <= plots.MAX_LAYER_TICKS
    if size == 2:  # few enough: every block named once, with its size
        assert texts == ["d11"] + [f"block {b} (2 layers)" for b in range(5, 0, -1)] + ["d0"]
    elif size:
        assert all(t.startswith("block ") for t in texts[1:-1])


def test_a_damaged_depth_record_is_skipped_not_fatal():
    good = {"layers": ["a", "b"], "output_grad": [1.0, 2.0], "weight_grad": [1.0, "NaN"],
            "weight_norm": [1.0, 1.0], "outputs": [False, True]}
    assert DepthProfile.from_record(good).layers == ("a", "b")
    for damage in ({"output_grad": ["x", 1.0]}, {"weight_norm": [1.0]}, {"outputs": [True]},
                   {"blocks": [1]}, {"layers": "ab"}):
        assert DepthProfile.from_record({**good, **damage}) is None, damage
    assert DepthProfile.from_record(["not", "a", "dict"]) is None
