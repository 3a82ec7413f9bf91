"""The calculators agree with Keras, reproduce the AlexNet figures, and reject bad input by name."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnbook import calc, models, report

PRESETS = calc.presets()


def keras_rows(layers):
    """(name, output shape, parameters) of every spec layer, read from the Keras model."""
    model = calc.to_keras(layers)
    rows = []
    for spec in layers[1:]:
        layer = model.get_layer(spec["name"])
        rows.append((spec["name"], tuple(layer.output.shape[1:]), layer.count_params()))
    return model.count_params(), rows


def calc_rows(layers):
    table = calc.analyze(layers).table
    return int(table["params"].sum()), list(zip(table["layer"][1:], table["shape"][1:],
                                                table["params"][1:]))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_agrees_with_keras(name):
    assert calc_rows(PRESETS[name]) == keras_rows(PRESETS[name])


@pytest.mark.parametrize("name, expected", [("conv", 1_191_502), ("pool", 589_390)])
def test_cifar_presets_are_the_book_models(name, expected):
    summary = calc.analyze(PRESETS[name])
    assert summary.totals["params"] == models.build_model(name).count_params() == expected
    assert summary.totals["output"] == "10"


def keras_bn_model(front=(), block=None):
    """A small model with the layer types of the book's improved CNNs: augmentation in a nested
    Sequential, convolutions without bias, batch normalization, ReLU layers, global average
    pooling and dropout."""
    import keras
    from keras import layers

    block = block or [layers.Conv2D(16, 3, padding="same", use_bias=False),
                      layers.BatchNormalization(), layers.ReLU()]
    augment = keras.Sequential([layers.RandomFlip("horizontal"),
                                layers.RandomTranslation(0.125, 0.125, fill_mode="reflect"),
                                layers.RandomCrop(32, 32), layers.Rescaling(1 / 255)])
    return keras.Sequential([keras.Input((32, 32, 3)), *front, augment, *block,
                             layers.MaxPooling2D(), layers.Conv2D(32, 3, activation="relu"),
                             layers.BatchNormalization(), layers.GlobalAveragePooling2D(),
                             layers.Dropout(0.3), layers.Dense(10)])


def test_batchnorm_gap_dropout_and_augmentation_agree_with_keras():
    import keras

    model = keras_bn_model()
    specs = calc.from_keras(model)
    assert [s["type"] for s in specs] == ["input", "conv", "batchnorm", "maxpool", "conv",
                                          "batchnorm", "gap", "dropout", "dense"]
    assert [s["name"] for s in specs[1:]] == ["conv1", "bn1", "pool1", "conv2", "bn2", "gap1",
                                              "drop1", "fc1"]
    summary = calc.analyze(specs)
    assert summary.totals["params"] == model.count_params()
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert summary.totals["non_trainable"] == frozen == 2 * (16 + 32)
    shapes = [tuple(layer.output.shape[1:]) for layer in model.layers
              if not isinstance(layer, (keras.Sequential, keras.layers.ReLU))]
    assert list(summary.table["shape"][1:]) == shapes
    bn1 = summary.table.set_index("layer").loc["bn1"]
    assert (bn1["weights"], bn1["biases"], bn1["non_trainable"], bn1["params"]) == (16, 16, 32, 64)
    assert bn1["macs"] == 0 and bn1["activations"] == 32 * 32 * 16
    gap = summary.table.set_index("layer").loc["gap1"]
    assert (gap["output"], gap["params"], gap["macs"], gap["activations"]) == ("32", 0, 0, 32)
    assert calc_rows(specs) == keras_rows(specs)  # and built back by to_keras
    assert "non_trainable" in summary.styled().to_html()
    assert "non_trainable" not in calc.analyze(PRESETS["conv"]).styled().to_html()


def test_batchnorm_values_get_no_gradient_or_optimizer_state():
    specs = calc.from_keras(keras_bn_model())
    summary = calc.analyze(specs)
    trainable = summary.totals["params"] - summary.totals["non_trainable"]
    memory = calc.training_memory(specs, batch_size=8, optimizer="adam")
    assert memory["weights"] == 4 * summary.totals["params"]
    assert memory["gradients"] == 4 * trainable and memory["optimizer state"] == 2 * 4 * trainable
    i3 = calc.MACHINES["i3-540"]
    est = calc.estimate_training(specs, i3, images=10, epochs=1, batch_size=10)
    assert est["traffic_bytes"] == 10 * 4 * summary.totals["activations"] * 4 + 4 * (
        2 * summary.totals["non_trainable"] + trainable * (6 + 2 * 2))


def test_from_keras_refuses_what_it_cannot_count():
    from keras import layers

    cases = [
        ([layers.Normalization()],  # adapted: its mean, variance and count are weights
         "Normalization layer with 7 parameters; the calculator takes only preprocessing layers "
         "without parameters"),
        ([layers.RandomCrop(24, 24)], "RandomCrop changes the shape from 32x32x3 to 24x24x3"),
        ([layers.PReLU()], "PReLU layers are not supported"),
        ([layers.AveragePooling2D(1)], "AveragePooling2D layers are not supported"),
    ]
    for front, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            calc.from_keras(keras_bn_model(front=front))
    bn_axis1 = [layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(axis=1)]
    no_gamma = [layers.Conv2D(16, 3, padding="same"), layers.BatchNormalization(scale=False)]
    for block in (bn_axis1, no_gamma):
        with pytest.raises(ValueError, match="only a batch normalization over the last axis"):
            calc.from_keras(keras_bn_model(block=block))


def test_assignment_alexnet_totals():
    totals = calc.analyze(PRESETS["alexnet"]).totals
    assert totals["params"] == 62_378_344
    assert totals["weights"] == 62_367_776
    assert totals["biases"] == 10_568
    assert totals["macs"] == 1_135_256_096  # normalization layers add no MACs
    assert totals["flops"] == 2 * 1_135_256_096


def test_grouped_alexnet_totals():
    table = calc.analyze(PRESETS["alexnet_grouped"]).table.set_index("layer")
    assert table["params"].sum() == 60_965_224
    assert table.loc["conv2", "weights"] == 5 * 5 * 48 * 256  # each filter sees one GPU's 48 channels
    assert table.loc["conv3", "weights"] == 3 * 3 * 256 * 384  # conv3 crosses the GPUs


def test_assignment_activation_rows_match_the_calculator():
    """The assignment's per-row counts are right; its stated total is not their sum."""
    table = calc.analyze(PRESETS["alexnet"]).table
    listed = [row[2] for row in report.ASSIGNMENT_ALEXNET["rows"]]
    computed = [int(v) for v, kind in zip(table["activations"], table["type"]) if kind != "flatten"]
    assert listed == computed
    assert sum(listed) == 1_049_571 == calc.analyze(PRESETS["alexnet"]).totals["activations"]
    assert report.ASSIGNMENT_ALEXNET["total_memory_values"] == 1_049_751 != sum(listed)
    # Its parameter column: conv rows leave out input depth and biases, so the total is too small.
    assert sum(row[3] for row in report.ASSIGNMENT_ALEXNET["rows"]) == 58_649_184


def test_table_columns_and_bytes():
    summary = calc.analyze(PRESETS["conv"], dtype="bfloat16")
    row = summary.table.set_index("layer").loc["conv1"]
    assert (row["output"], row["weights"], row["biases"], row["activations"]) == ("30x30x8", 216, 8, 7200)
    assert row["macs"] == 30 * 30 * 8 * 27 and row["flops"] == 2 * row["macs"]
    assert row["activation_bytes"] == 7200 * 2 and row["param_bytes"] == 224 * 2
    assert "total" in summary.styled().to_html()


# ------------------------------------------------------------------- random architectures
@st.composite
def architectures(draw):
    """Valid small models: convolutions, pools and norms on an image, then an optional dense head."""
    h, w, c = draw(st.integers(4, 24)), draw(st.integers(4, 24)), draw(st.integers(1, 6))
    layers = [{"type": "input", "name": "input", "shape": [h, w, c]}]
    for i in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "lrn", "batchnorm", "dropout"]))
        name = f"l{i}"
        if kind == "lrn":
            layers.append({"type": "lrn", "name": name, "size": draw(st.sampled_from([3, 5]))})
            continue
        if kind in ("batchnorm", "dropout"):
            layers.append({"type": kind, "name": name, **({"rate": draw(st.sampled_from(
                [0, 0.2, 0.5]))} if kind == "dropout" else {})})
            continue
        padding = draw(st.sampled_from(["valid", "same", 0, 1, 2]))
        room = min(h, w) + (2 * padding if isinstance(padding, int) else 0)
        k = draw(st.integers(1, 7 if padding == "same" else min(room, 7)))
        s = draw(st.integers(1, 3))
        if kind == "conv":
            g = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
            f = g * draw(st.integers(1, 4))
            layers.append({"type": "conv", "name": name, "filters": f, "kernel": k, "stride": s,
                           "padding": padding, "groups": g, "bias": draw(st.booleans())})
        else:
            layers.append({"type": "maxpool", "name": name, "pool": k, "stride": s,
                           "padding": padding})
        h, w, c = calc.analyze(layers).table["shape"].iloc[-1]
    head = draw(st.sampled_from(["none", "flatten", "gap", "gap keepdims"]))
    if head != "none":
        if head == "flatten":
            layers.append({"type": "flatten", "name": "flat"})
        else:
            layers.append({"type": "gap", "name": "gap", "keepdims": head == "gap keepdims"})
            if head == "gap keepdims":
                layers.append({"type": "flatten", "name": "flat"})
        for j in range(draw(st.integers(1, 2))):
            if draw(st.booleans()):
                layers.append({"type": draw(st.sampled_from(["batchnorm", "dropout"])),
                               "name": f"x{j}"})
            layers.append({"type": "dense", "name": f"fc{j}", "units": draw(st.integers(1, 16)),
                           "bias": draw(st.booleans())})
    return layers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_random_architectures_agree_with_keras(layers):
    assert calc_rows(layers) == keras_rows(layers)


@settings(max_examples=50, deadline=None)
@given(architectures())
def test_keras_round_trip(layers):
    back = calc.analyze(calc.from_keras(calc.to_keras(layers))).table.drop(columns="layer")
    assert back.equals(calc.analyze(layers).table.drop(columns="layer"))


# ------------------------------------------------------------------- receptive fields, by Keras
def windows(layers):
    """Per layer, worked out here apart from calc, along each axis: the input pixels each unit
    depends on, exactly (a list over the units of sets, followed through every layer's real
    units: padding depends on nothing), and the window's (first pixel of unit 0, jump, size);
    None for a layer whose units see the whole input (dense, global average pooling; a flatten
    keeps its input's windows, as a normalization or a dropout does). Keras's rules: 'same'
    pads max((out - 1) x stride + k - n, 0) pixels, the smaller half before."""
    shapes = [row["shape"] for row in calc.layer_rows(layers)]
    axes = [(0, 1, 1, [{i} for i in range(n)]) for n in layers[0]["shape"][:2]]
    out = []
    for spec, before, after in zip(layers, [None, *shapes], shapes):
        kind = spec["type"]
        if kind in ("conv", "maxpool"):
            k = spec["kernel"] if kind == "conv" else spec["pool"]
            s = spec.get("stride", 1) if kind == "conv" else spec.get("stride") or k
            padding = spec.get("padding", "valid")
            new = []
            for (start, jump, size, sets), n, m in zip(axes, before[:2], after[:2]):
                left = {"valid": 0, "same": max((m - 1) * s + k - n, 0) // 2}.get(padding, padding)
                units = [set().union(*(sets[i] for i in range(u * s - left, u * s - left + k)
                                       if 0 <= i < n)) for u in range(m)]
                new.append((start - left * jump, jump * s, size + (k - 1) * jump, units))
            axes = new
        elif kind in ("dense", "gap"):
            axes = None
        out.append(axes)
    return out


def gradient_model(layers):
    """to_keras's model with every weight positive and averaging (1 / fan-in), biases 0, batch
    normalization the identity, and each max pooling an average pooling of the same window: the
    window a max pool chooses from is its receptive field, but its gradient reaches only the
    pixel it chose. Nothing cancels, and every ReLU stays active on a positive image."""
    import keras

    def swap(layer):
        config = layer.get_config()
        if isinstance(layer, keras.layers.MaxPooling2D):
            return keras.layers.AveragePooling2D.from_config(config)
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(calc.to_keras(layers), clone_function=swap)
    for layer in model.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            kernel = np.asarray(layer.kernel)
            fan_in = kernel.size // kernel.shape[-1]
            layer.kernel.assign(np.full(kernel.shape, 1 / fan_in, np.float32))
            if layer.bias is not None:
                layer.bias.assign(np.zeros(layer.bias.shape, np.float32))
        elif isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([np.ones(c), np.zeros(c), np.zeros(c), np.ones(c)])
    return model


def seen_pixels(layers, targets):
    """For each (layer name, index of one output value): the input pixels whose gradient is
    non-zero (a boolean image)."""
    import keras
    import tensorflow as tf

    model = gradient_model(layers)
    names = sorted({name for name, _ in targets})
    features = keras.Model(model.inputs, [model.get_layer(n).output for n in names])
    x = tf.constant(np.random.default_rng(0).uniform(0.5, 1.5, (1, *layers[0]["shape"])),
                    tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        found = features(x, training=False)
        outputs = dict(zip(names, found if len(names) > 1 else [found]))  # one: not in a list
        picked = [outputs[name][(0, *index)] for name, index in targets]
    seen = [np.abs(tape.gradient(y, x).numpy()[0]).sum(-1) > 0 for y in picked]
    del tape
    return seen


def check_receptive_fields(layers, which=None, *, exact=True):
    """Keras's gradients are non-zero on exactly the pixels each unit depends on, for the first,
    centre and last unit of every spatial layer (or those in ``which``), and on every pixel for
    a global layer; those pixels lie inside the window that calc's rf and jump give (rf wide,
    jump apart from unit to unit, clipped to the image), and with ``exact`` they fill it.

    A window need not be full: once a stride is larger than its window, the layer skips pixels
    (the window has holes), and a padded unit of a map that stops short of the image's border
    depends on nothing, though its window reaches into the image."""
    rows = calc.layer_rows(layers)
    image = layers[0]["shape"][:2]
    targets, wanted, boxes = [], [], []
    for row, before, axes in zip(rows[1:], rows, windows(layers)[1:]):
        if which is not None and row["layer"] not in which:
            continue
        if axes is None:
            assert row["rf"] == row["jump"] == max(image), row["layer"]
            targets.append((row["layer"], (0,) * len(row["shape"])))
            wanted.append(np.ones(image, bool))
            boxes.append(wanted[-1])
            continue
        assert [size for _, _, size, _ in axes] == [row["rf"]] * 2, row["layer"]
        assert [jump for _, jump, _, _ in axes] == [row["jump"]] * 2, row["layer"]
        flat = row["type"] == "flatten"
        h, w, c = (before if flat else row)["shape"]
        for unit in {(0, 0), ((h - 1) // 2, (w - 1) // 2), (h - 1, w - 1)}:
            depends = np.zeros(image, bool)
            depends[np.ix_(sorted(axes[0][3][unit[0]]), sorted(axes[1][3][unit[1]]))] = True
            box = np.zeros(image, bool)
            (r0, rj, rs, _), (c0, cj, cs, _) = axes
            top, left = r0 + unit[0] * rj, c0 + unit[1] * cj
            box[max(top, 0):max(top + rs, 0), max(left, 0):max(left + cs, 0)] = True
            targets.append((row["layer"], ((unit[0] * w + unit[1]) * c,) if flat else (*unit, 0)))
            wanted.append(depends)
            boxes.append(box)
    for (name, index), seen, depends, box in zip(targets, seen_pixels(layers, targets), wanted,
                                                  boxes):
        assert np.array_equal(seen, depends), (name, index, np.argwhere(seen != depends)[:5])
        assert not (depends & ~box).any(), (name, index, np.argwhere(depends & ~box)[:5])
        if exact:
            assert np.array_equal(depends, box), (name, index, np.argwhere(depends != box)[:5])


STRIDES_AND_PADDINGS = [
    {"type": "input", "name": "input", "shape": [19, 14, 2]},
    {"type": "conv", "name": "valid3", "filters": 3, "kernel": 3},
    {"type": "conv", "name": "same3s2", "filters": 4, "kernel": 3, "stride": 2, "padding": "same"},
    {"type": "maxpool", "name": "pool2", "pool": 2, "stride": 1, "padding": "same"},
    {"type": "conv", "name": "pad2", "filters": 2, "kernel": 5, "padding": 2, "groups": 2},
    {"type": "conv", "name": "even4s2", "filters": 3, "kernel": 4, "stride": 2, "padding": "same"},
    {"type": "batchnorm", "name": "bn"},
    {"type": "maxpool", "name": "pool3", "pool": 3, "stride": 2, "padding": "valid"},
    {"type": "gap", "name": "gap"},
    {"type": "dropout", "name": "drop"},
    {"type": "dense", "name": "fc", "units": 3},
]


@pytest.mark.parametrize("name, layers, which", [
    ("strides and paddings", STRIDES_AND_PADDINGS, None),
    ("variant 1", PRESETS["conv"], None),
    ("variant 2", PRESETS["pool"], None),
    ("AlexNet's first layers", PRESETS["alexnet"][:6], None),
], ids=lambda v: v if isinstance(v, str) else "")
def test_receptive_field_is_where_the_gradient_is_non_zero(name, layers, which):
    check_receptive_fields(layers, which)  # exact: every window full, clipped at the borders


def test_receptive_fields_of_the_book_models():
    def fields(name):
        rows = calc.receptive_fields(PRESETS[name])
        return [(r["layer"], r["receptive field"], r["stride in pixels"]) for r in rows]

    assert fields("conv") == [("input", 1, 1), ("conv1", 3, 1), ("conv2", 5, 1), ("conv3", 7, 1),
                              ("conv4", 11, 1), ("conv5", 17, 1), ("conv6", 23, 1),
                              ("conv7", 31, 1)]
    assert fields("pool") == [("input", 1, 1), ("conv1", 3, 1), ("conv2", 5, 1), ("pool1", 6, 1),
                              ("conv3", 8, 1), ("conv4", 12, 1), ("pool2", 13, 1),
                              ("conv5", 19, 1), ("conv6", 25, 1), ("pool3", 26, 2),
                              ("conv7", 42, 2)]
    alexnet = calc.analyze(PRESETS["alexnet"]).table.set_index("layer")
    assert list(alexnet.loc[["conv1", "pool1", "conv2", "pool2", "conv5", "pool3"], "rf"]) == [
        11, 19, 51, 67, 163, 195]
    assert list(alexnet.loc[["conv1", "pool1", "pool2", "pool3", "fc6"], "jump"]) == [
        4, 8, 16, 32, 227]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(architectures())
def test_random_receptive_fields_agree_with_keras(layers):
    spatial = [row["layer"] for row in calc.layer_rows(layers) if len(row["shape"]) == 3]
    windowed = [spec for spec in layers if spec["type"] in ("conv", "maxpool")]
    full = all(spec["padding"] == "valid" and spec["stride"] <= spec.get("kernel", spec.get("pool"))
               for spec in windowed)  # no holes, no padding: every window is full
    check_receptive_fields(layers, which=spatial[-1:], exact=full)


# ------------------------------------------------------------------------------ bad input
INPUT = {"type": "input", "name": "input", "shape": [32, 32, 3]}


def conv(**fields):
    return {"type": "conv", "name": "c", "filters": 8, "kernel": 3, **fields}


@pytest.mark.parametrize("layers, message", [
    ([{**INPUT, "shape": [32, -1, 3]}], r"layer 0 \(input\): shape must be positive, got -1"),
    ([{**INPUT, "shape": [32, 0, 3]}], r"layer 0 \(input\): shape must be positive, got 0"),
    ([INPUT, conv(filters=0)], r"layer 1 \(c\): filters must be positive, got 0"),
    ([INPUT, conv(kernel=-3)], r"layer 1 \(c\): kernel must be positive"),
    ([INPUT, conv(kernel=35)], r"layer 1 \(c\): kernel 35 is larger than its padded input 32"),
    ([INPUT, conv(kernel=35, padding=1)], r"kernel 35 is larger than its padded input 34 \(32 \+ 2 x 1"),
    ([INPUT, conv(stride=0)], r"layer 1 \(c\): stride must be positive, got 0"),
    ([INPUT, conv(padding="full")], r"layer 1 \(c\): unknown padding 'full'"),
    ([INPUT, conv(padding=-1)], r"layer 1 \(c\): padding must be at least 0, got -1"),
    ([INPUT, conv(kernel=3.5)], r"layer 1 \(c\): kernel must be a whole number, got 3.5"),
    ([INPUT, conv(filters="8")], r"layer 1 \(c\): filters must be a whole number, got '8'"),
    ([INPUT, conv(stride=True)], r"layer 1 \(c\): stride must be a whole number, got True"),
    ([INPUT, conv(groups=2)], r"layer 1 \(c\): groups 2 must divide both the input channels \(3\)"),
    ([INPUT, conv(groups=3, filters=8)], r"groups 3 must divide both the input channels \(3\) and the filters \(8\)"),
    ([INPUT, conv(), {"type": "dense", "name": "d", "units": 10}],
     r"layer 2 \(d\): a dense layer needs a flat input but gets 30x30x8; add a flatten layer"),
    ([INPUT, {"type": "maxpool", "name": "p", "pool": 40}], r"layer 1 \(p\): kernel 40 is larger"),
    ([INPUT, {"type": "flatten"}, {"type": "conv", "filters": 2, "kernel": 1}],
     r"layer 2 \(conv2\): a conv layer needs a height x width x channels input, got 3072"),
    ([INPUT, {"type": "avgpool"}], r"layer 1: unknown layer type 'avgpool'"),
    ([INPUT, {"type": "flatten"}, {"type": "gap"}],
     r"layer 2 \(gap2\): a gap layer needs a height x width x channels input, got 3072"),
    ([INPUT, {"type": "gap"}, {"type": "dense", "units": 10}, {"type": "dropout", "rate": 1}],
     r"layer 3 \(dropout3\): rate must be a number from 0 to 1 \(1 excluded\), got 1\."),
    ([INPUT, {"type": "conv", "kernel": 3}], r"layer 1: a conv layer needs filters"),
    ([INPUT, conv(kernal=3)], r"layer 1: unknown field\(s\) kernal for a conv layer"),
    ([conv()], r"layer 0 \(c\): the first layer, and only the first, must be an input layer"),
    ([], r"non-empty list of layer specs"),
])
def test_bad_input_names_layer_and_field(layers, message):
    with pytest.raises(ValueError, match=message):
        calc.analyze(layers)
    with pytest.raises(ValueError, match=message):
        calc.to_keras(layers)  # validated before Keras sees it


def test_bad_dtype_optimizer_and_machine_inputs():
    with pytest.raises(ValueError, match="Unknown dtype 'float8'"):
        calc.analyze(PRESETS["conv"], dtype="float8")
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'"):
        calc.training_memory(PRESETS["conv"], batch_size=32, optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        calc.training_memory(PRESETS["conv"], batch_size=0)
    i3 = calc.MACHINES["i3-540"]
    for efficiency in (1.5, 0.0, 1e-320):  # 1e-320 would make the time infinite
        with pytest.raises(ValueError, match=re.escape(
                f"efficiency must be a number from 0.001 to 1, got {efficiency!r}.")):
            calc.estimate_training(PRESETS["conv"], i3, images=10, epochs=1, efficiency=efficiency)
    with pytest.raises(ValueError, match="epochs must be positive, got 0"):
        calc.estimate_training(PRESETS["conv"], i3, images=10, epochs=0)
    with pytest.raises(ValueError, match="Unknown optimizer 'rmsprop'; use one of sgd, momentum, adam"):
        calc.estimate_training(PRESETS["conv"], i3, images=10, epochs=1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        calc.estimate_training(PRESETS["conv"], i3, images=10, epochs=1, batch_size=0)


@pytest.mark.parametrize("field, value, message", [
    ("clock_ghz", 1e-320, "clock_ghz must be a number from 0.001 to 1,000,000, got 1e-320."),
    ("clock_ghz", 0, "clock_ghz must be a number from 0.001 to 1,000,000, got 0.0."),
    ("clock_ghz", 2e6, "clock_ghz must be a number from 0.001 to 1,000,000, got 2000000.0."),
    ("clock_ghz", "3 GHz", "clock_ghz must be a number from 0.001 to 1,000,000, got '3 GHz'."),
    ("bandwidth_gbs", 1e-9, "bandwidth_gbs must be a number from 0.001 to 1,000,000, got 1e-09."),
    ("cores", 0, "cores must be positive, got 0."),
    ("flops_per_cycle", 8.5, "flops_per_cycle must be a whole number, got 8.5."),
])
def test_a_machine_with_impossible_numbers_is_refused(field, value, message):
    numbers = {"cores": 2, "clock_ghz": 3.06, "flops_per_cycle": 8, "bandwidth_gbs": 21.3}
    with pytest.raises(ValueError, match=re.escape(message)):
        calc.Machine("bad", **{**numbers, field: value}, source="test")


def test_the_smallest_machine_and_efficiency_allowed_still_give_a_finite_time():
    tiny = calc.Machine("tiny", 1, calc.MIN_RATE, 1, calc.MIN_RATE, "test")
    est = calc.estimate_training(PRESETS["alexnet"], tiny, images=2_147_483_647,
                                 epochs=2_147_483_647, efficiency=calc.MIN_EFFICIENCY)
    assert 0 < est["compute_seconds"] < 1e300 and 0 < est["memory_seconds"] < 1e300
    assert calc.Machine("no bandwidth", 1, 1.0, 8, 0, "test").bandwidth_gbs == 0  # 0: not known


# ------------------------------------------------------------------- memory and time
def test_training_memory_parts():
    layers = [INPUT, conv(), {"type": "flatten"}, {"type": "dense", "name": "d", "units": 10}]
    params = 3 * 3 * 3 * 8 + 8 + 30 * 30 * 8 * 10 + 10
    mem = calc.training_memory(layers, batch_size=4, optimizer="adam", dtype="float32")
    assert mem["weights"] == mem["gradients"] == params * 4
    assert mem["optimizer state"] == 2 * params * 4  # Adam keeps two moments per parameter
    assert mem["activations"] == 4 * 4 * (30 * 30 * 8 + 10)  # batch x bytes x stored values
    assert mem["input batch"] == 4 * 4 * 32 * 32 * 3
    momentum = calc.training_memory(layers, batch_size=4, optimizer="momentum", dtype="float16")
    assert momentum["optimizer state"] == params * 2
    assert calc.training_memory(layers, batch_size=4, optimizer="sgd")["optimizer state"] == 0


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_largest_batch_is_the_boundary(optimizer):
    ram = 2 * 1024**3  # the assignment's scenario: half of 4 GB free
    n = calc.largest_batch(PRESETS["alexnet"], ram, optimizer=optimizer)
    fits = calc.training_memory(PRESETS["alexnet"], batch_size=n, optimizer=optimizer).sum()
    over = calc.training_memory(PRESETS["alexnet"], batch_size=n + 1, optimizer=optimizer).sum()
    assert n > 0 and fits <= ram < over


def test_largest_batch_is_zero_when_weights_do_not_fit():
    assert calc.largest_batch(PRESETS["alexnet"], 500 * 1024**2) == 0  # Adam alone needs ~1 GB


def test_first_generation_i3_specs():
    i3 = calc.MACHINES["i3-540"]
    assert (i3.cores, i3.clock_ghz, i3.flops_per_cycle, i3.bandwidth_gbs) == (2, 3.06, 8, 21.3)
    assert i3.peak_flops == pytest.approx(48.96e9)
    assert [calc.MACHINES[f"i3-5{n}0"].clock_ghz for n in (3, 4, 5, 6)] == [2.93, 3.06, 3.20, 3.33]


def test_time_estimate_is_flops_over_sustained_rate():
    layers, i3 = PRESETS["alexnet"], calc.MACHINES["i3-540"]
    est = calc.estimate_training(layers, i3, images=10_000, epochs=15, efficiency=0.5)
    flops = 10_000 * 15 * 3 * 2 * 1_135_256_096
    assert est["training_flops"] == flops
    assert est["compute_seconds"] == pytest.approx(flops / (48.96e9 * 0.5))
    assert est["bound"] == "compute" and est["seconds"] == est["compute_seconds"]
    assert 0 < est["memory_seconds"] < est["compute_seconds"]
    assert calc.estimate_epoch_seconds(layers, 10, 1e9, validation_images=5) == pytest.approx(
        (10 * 3 + 5) * 2 * 1_135_256_096 / 1e9)


def test_memory_bound_wins_on_a_slow_memory():
    slow = calc.Machine("slow memory", 2, 3.0, 8, 0.001, "made up for the test")
    est = calc.estimate_training(PRESETS["conv"], slow, images=100, epochs=1)
    assert est["bound"] == "memory" and est["seconds"] == est["memory_seconds"]


def test_build_machine_reads_this_cpu():
    machine = calc.build_machine()
    assert machine.cores >= 1 and machine.clock_ghz > 0 and machine.flops_per_cycle in (8, 16, 32, 64)
    assert math.isclose(machine.peak_flops,
                        machine.cores * machine.clock_ghz * 1e9 * machine.flops_per_cycle)


def test_measure_training_times_real_steps():
    tiny = [{"type": "input", "name": "input", "shape": [8, 8, 3]}, conv(filters=4),
            {"type": "flatten", "name": "f"}, {"type": "dense", "name": "d", "units": 10}]
    result = calc.measure_training(tiny, batch_size=4, steps=2, warmup=1)
    assert 0 < result["step_seconds"] * 2 < result["wall_seconds"]  # two timed steps, plus warm-up
    assert result["achieved_flops"] == pytest.approx(
        calc.training_flops_per_image(tiny) * 4 / result["step_seconds"])


def test_alexnet_comparison_names_each_mistake():
    table = report.alexnet_comparison().set_index("layer")["what is wrong"]
    assert all(table[c] == "k x k x filters only" for c in ["conv1", "conv2", "conv3", "conv4", "conv5"])
    assert table["fc6"] == table["fc7"] == "biases left out"
    assert table["fc8"] == "biases left out; labelled FC6, is FC8"
    assert set(table.drop(["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"])) == {"right"}


# ------------------------------------------------------------- refused as the browser refuses
# Every input below is refused by Python and by the browser (calc-core.js) with the same message,
# word for word; tests/test_browser.py runs this list through both. None: accepted by both (the
# limits themselves). A case: (id, function, positional arguments, keyword arguments, message).
TINY = [{"type": "input", "name": "input", "shape": [8, 8, 3]},
        {"type": "conv", "name": "c", "filters": 4, "kernel": 3},
        {"type": "flatten", "name": "f"}, {"type": "dense", "name": "d", "units": 10}]
MACHINE = {"cores": 2, "clock_ghz": 3.06, "flops_per_cycle": 8, "bandwidth_gbs": 21.3}
RUN = {"images": 100, "epochs": 2}
NAN, INF = float("nan"), float("inf")
HUGE = 10**300
HUGE_TEXT = f"{HUGE:,}"
RATE = "must be a number from 0.001 to 1,000,000, got"
FLOPS = "flops_per_second must be a number from 1,000 to 1e+36, got"
RAM_LIMIT = "1,073,741,824,000,000"  # a million GiB


def _machine(**fields):
    return ("Machine", (), {**MACHINE, **fields})


def _layer(index, **fields):
    layers = [dict(layer) for layer in TINY]
    layers[index] = {**layers[index], **fields}
    return layers


REFUSED = [
    # Machine: whole numbers up to 2,147,483,647; clock and bandwidth from 0.001 to 1,000,000
    ("cores 10**300", *_machine(cores=HUGE),
     f"cores is absurdly large: at most 2,147,483,647, got {HUGE_TEXT}."),
    ("cores 2**31", *_machine(cores=2**31),
     "cores is absurdly large: at most 2,147,483,647, got 2,147,483,648."),
    ("cores 2**31 - 1", *_machine(cores=2**31 - 1), None),
    ("cores negative", *_machine(cores=-2), "cores must be positive, got -2."),
    ("cores nan", *_machine(cores=NAN), "cores must be a whole number, got nan."),
    ("cores True", *_machine(cores=True), "cores must be a whole number, got True."),
    ("cores string", *_machine(cores="2"), "cores must be a whole number, got '2'."),
    ("flops_per_cycle 2**40", *_machine(flops_per_cycle=2**40),
     "flops_per_cycle is absurdly large: at most 2,147,483,647, got 1,099,511,627,776."),
    ("clock nan", *_machine(clock_ghz=NAN), f"clock_ghz {RATE} nan."),
    ("clock inf", *_machine(clock_ghz=INF), f"clock_ghz {RATE} inf."),
    ("clock -inf", *_machine(clock_ghz=-INF), f"clock_ghz {RATE} -inf."),
    ("clock None", *_machine(clock_ghz=None), f"clock_ghz {RATE} None."),
    ("clock True", *_machine(clock_ghz=True), f"clock_ghz {RATE} True."),
    ("clock 1e-5", *_machine(clock_ghz=1e-5), f"clock_ghz {RATE} 1e-05."),
    ("clock 1e17", *_machine(clock_ghz=1e17), f"clock_ghz {RATE} 1e+17."),
    ("clock -0.0", *_machine(clock_ghz=-0.0), f"clock_ghz {RATE} -0.0."),
    ("clock 10**309", *_machine(clock_ghz=10**309), f"clock_ghz {RATE} {10**309}."),
    ("clock 1,000,000", *_machine(clock_ghz=1_000_000), None),
    ("bandwidth False", *_machine(bandwidth_gbs=False), f"bandwidth_gbs {RATE} False."),
    ("bandwidth nan", *_machine(bandwidth_gbs=NAN), f"bandwidth_gbs {RATE} nan."),
    ("bandwidth -1", *_machine(bandwidth_gbs=-1.0), f"bandwidth_gbs {RATE} -1.0."),
    ("bandwidth 0: not known", *_machine(bandwidth_gbs=0), None),
    # estimate_training: images, epochs and batch_size whole; efficiency from 0.001 to 1
    ("training images -5", "estimate_training", (TINY, MACHINE), {**RUN, "images": -5},
     "images must be positive, got -5."),
    ("training images 10**300", "estimate_training", (TINY, MACHINE), {**RUN, "images": HUGE},
     f"images is absurdly large: at most 2,147,483,647, got {HUGE_TEXT}."),
    ("training epochs 2**31", "estimate_training", (TINY, MACHINE), {**RUN, "epochs": 2**31},
     "epochs is absurdly large: at most 2,147,483,647, got 2,147,483,648."),
    ("training batch 2**31", "estimate_training", (TINY, MACHINE), {**RUN, "batch_size": 2**31},
     "batch_size is absurdly large: at most 2,147,483,647, got 2,147,483,648."),
    ("efficiency nan", "estimate_training", (TINY, MACHINE), {**RUN, "efficiency": NAN},
     "efficiency must be a number from 0.001 to 1, got nan."),
    ("efficiency inf", "estimate_training", (TINY, MACHINE), {**RUN, "efficiency": INF},
     "efficiency must be a number from 0.001 to 1, got inf."),
    ("efficiency string", "estimate_training", (TINY, MACHINE), {**RUN, "efficiency": "0.5"},
     "efficiency must be a number from 0.001 to 1, got '0.5'."),
    ("efficiency None", "estimate_training", (TINY, MACHINE), {**RUN, "efficiency": None},
     "efficiency must be a number from 0.001 to 1, got None."),
    ("optimizer list", "estimate_training", (TINY, MACHINE), {**RUN, "optimizer": ["adam"]},
     "Unknown optimizer ['adam']; use one of sgd, momentum, adam."),
    ("dtype None", "estimate_training", (TINY, MACHINE), {**RUN, "dtype": None},
     "Unknown dtype None; use one of float64, float32, bfloat16, float16, int8."),
    ("training at the limits", "estimate_training", (TINY, {**MACHINE, "cores": 2**31 - 1}),
     {"images": 2**31 - 1, "epochs": 2**31 - 1, "efficiency": 1}, None),
    # estimate_epoch_seconds: images positive, validation_images at least 0, a bounded FLOP/s
    ("epoch images -5", "estimate_epoch_seconds", (TINY, -5, 1e9), {},
     "images must be positive, got -5."),
    ("epoch images 0", "estimate_epoch_seconds", (TINY, 0, 1e9), {},
     "images must be positive, got 0."),
    ("epoch images 2.5", "estimate_epoch_seconds", (TINY, 2.5, 1e9), {},
     "images must be a whole number, got 2.5."),
    ("epoch images 10**12", "estimate_epoch_seconds", (TINY, 10**12, 1e9), {},
     "images is absurdly large: at most 2,147,483,647, got 1,000,000,000,000."),
    ("validation -1", "estimate_epoch_seconds", (TINY, 10, 1e9), {"validation_images": -1},
     "validation_images must be at least 0, got -1."),
    ("validation None", "estimate_epoch_seconds", (TINY, 10, 1e9), {"validation_images": None},
     "validation_images must be a whole number, got None."),
    ("rate nan", "estimate_epoch_seconds", (TINY, 10, NAN), {}, f"{FLOPS} nan."),
    ("rate inf", "estimate_epoch_seconds", (TINY, 10, INF), {}, f"{FLOPS} inf."),
    ("rate 0", "estimate_epoch_seconds", (TINY, 10, 0), {}, f"{FLOPS} 0.0."),
    ("rate negative", "estimate_epoch_seconds", (TINY, 10, -1e9), {}, f"{FLOPS} -1000000000.0."),
    ("rate 1e37", "estimate_epoch_seconds", (TINY, 10, 1e37), {}, f"{FLOPS} 1e+37."),
    ("rate string", "estimate_epoch_seconds", (TINY, 10, "1e9"), {}, f"{FLOPS} '1e9'."),
    ("rate True", "estimate_epoch_seconds", (TINY, 10, True), {}, f"{FLOPS} True."),
    ("rate at the limits", "estimate_epoch_seconds", (TINY, 2**31 - 1, 1_000),
     {"validation_images": 0}, None),
    ("rate 1e36", "estimate_epoch_seconds", (TINY, 1, 1e36), {}, None),
    # training_memory
    ("memory batch 10**300", "training_memory", (TINY,), {"batch_size": HUGE},
     f"batch_size is absurdly large: at most 2,147,483,647, got {HUGE_TEXT}."),
    ("memory batch -1", "training_memory", (TINY,), {"batch_size": -1},
     "batch_size must be positive, got -1."),
    ("memory batch 1.5", "training_memory", (TINY,), {"batch_size": 1.5},
     "batch_size must be a whole number, got 1.5."),
    ("memory batch nan", "training_memory", (TINY,), {"batch_size": NAN},
     "batch_size must be a whole number, got nan."),
    ("memory batch True", "training_memory", (TINY,), {"batch_size": True},
     "batch_size must be a whole number, got True."),
    ("memory dtype list", "training_memory", (TINY,), {"batch_size": 1, "dtype": ["float32"]},
     "Unknown dtype ['float32']; use one of float64, float32, bfloat16, float16, int8."),
    # largest_batch: ram_bytes whole, from 1 to a million GiB
    ("ram 0", "largest_batch", (TINY, 0), {}, "ram_bytes must be positive, got 0."),
    ("ram negative", "largest_batch", (TINY, -1), {}, "ram_bytes must be positive, got -1."),
    ("ram a byte over a million GiB", "largest_batch", (TINY, 2**30 * 10**6 + 1), {},
     f"ram_bytes is absurdly large: at most {RAM_LIMIT}, got 1,073,741,824,000,001."),
    ("ram 10**300", "largest_batch", (TINY, HUGE), {},
     f"ram_bytes is absurdly large: at most {RAM_LIMIT}, got {HUGE_TEXT}."),
    ("ram float", "largest_batch", (TINY, 2e9 + 0.5), {},
     "ram_bytes must be a whole number, got 2000000000.5."),
    ("ram nan", "largest_batch", (TINY, NAN), {}, "ram_bytes must be a whole number, got nan."),
    ("ram inf", "largest_batch", (TINY, INF), {}, "ram_bytes must be a whole number, got inf."),
    ("ram string", "largest_batch", (TINY, "2GiB"), {},
     "ram_bytes must be a whole number, got '2GiB'."),
    ("ram None", "largest_batch", (TINY, None), {}, "ram_bytes must be a whole number, got None."),
    ("ram True", "largest_batch", (TINY, True), {}, "ram_bytes must be a whole number, got True."),
    ("ram a million GiB", "largest_batch", (TINY, 2**30 * 10**6), {}, None),
    ("ram 1 byte", "largest_batch", (TINY, 1), {}, None),
    # analyze / layer_rows
    ("shape 10**300", "analyze", (_layer(0, shape=[8, HUGE, 3]),), {},
     f"layer 0 (input): shape is absurdly large: at most 2,147,483,647, got {HUGE_TEXT}."),
    ("filters 2**31", "analyze", (_layer(1, filters=2**31),), {},
     "layer 1 (c): filters is absurdly large: at most 2,147,483,647, got 2,147,483,648."),
    ("units 2**31", "analyze", (_layer(3, units=2**31),), {},
     "layer 3 (d): units is absurdly large: at most 2,147,483,647, got 2,147,483,648."),
    ("padding 2**31", "analyze", (_layer(1, padding=2**31),), {},
     "layer 1 (c): padding is absurdly large: at most 2,147,483,647, got 2,147,483,648."),
    ("padding nan", "analyze", (_layer(1, padding=NAN),), {},
     "layer 1 (c): padding must be a whole number, got nan."),
    ("padding True", "analyze", (_layer(1, padding=True),), {},
     "layer 1 (c): padding must be a whole number, got True."),
    ("kernel inf", "analyze", (_layer(1, kernel=INF),), {},
     "layer 1 (c): kernel must be a whole number, got inf."),
    ("stride None: the kernel", "analyze", (_layer(1, stride=None),), {}, None),
    ("two-number shape", "analyze", (_layer(0, shape=[8, 8]),), {},
     "layer 0 (input): shape must be [height, width, channels] or [features], got [8, 8]."),
    ("number shape", "analyze", (_layer(0, shape=8),), {},
     "layer 0 (input): shape must be [height, width, channels] or [features], got 8."),
    ("type list", "analyze", (_layer(1, type=["conv"]),), {},
     "layer 1: unknown layer type ['conv']; use one of input, conv, maxpool, lrn, batchnorm, dropout, gap, flatten, dense."),
    ("type number", "analyze", (_layer(1, type=5),), {},
     "layer 1: unknown layer type 5; use one of input, conv, maxpool, lrn, batchnorm, dropout, gap, flatten, dense."),
    ("layer None", "analyze", ([TINY[0], None],), {},
     "layer 1: a layer must be a dict with a 'type', got None."),
    ("name number", "analyze", (_layer(1, name=5),), {}, "layer 1: name must be a string, got 5."),
    ("name True", "analyze", (_layer(1, name=True),), {},
     "layer 1: name must be a string, got True."),
    ("name list", "analyze", (_layer(1, name=[]),), {}, "layer 1: name must be a string, got []."),
    ("name None: the default", "analyze", (_layer(1, name=None),), {}, None),
    ("bias string", "analyze", (_layer(1, bias="yes"),), {},
     "layer 1: bias must be True or False, got 'yes'."),
    ("bias list", "analyze", (_layer(3, bias=[]),), {},
     "layer 3: bias must be True or False, got []."),
    ("bias nan", "analyze", (_layer(3, bias=NAN),), {},
     "layer 3: bias must be True or False, got nan."),
    ("bias 0", "analyze", (_layer(3, bias=0),), {}, "layer 3: bias must be True or False, got 0."),
    # quoted as Python's repr() quotes them, and listed in Python's sorted() order
    ("padding escapes", "analyze", (_layer(1, padding="a\\b\n\t\x00\xa0\u2028"),), {},
     "layer 1 (c): unknown padding 'a\\\\b\\n\\t\\x00\\xa0\\u2028'; use 'valid', 'same' or a whole number."),
    ("type with both quotes", "analyze", (_layer(1, type="it's \"x\""),), {},
     "layer 1: unknown layer type 'it\\'s \"x\"'; use one of input, conv, maxpool, lrn, batchnorm, dropout, gap, flatten, dense."),
    ("optimizer with a quote", "training_memory", (TINY,), {"batch_size": 1, "optimizer": "adam's"},
     "Unknown optimizer \"adam's\"; use one of sgd, momentum, adam."),
    ("name astral", "analyze", (_layer(1, name=["\U000e0001", "\U0001f600"]),), {},
     "layer 1: name must be a string, got ['\\U000e0001', '\U0001f600']."),
    ("unknown fields by code point", "analyze", (_layer(3, **{"\U0001f600": 1, "\ue000": 2}),), {},
     "layer 3: unknown field(s) \ue000, \U0001f600 for a dense layer."),
    # the layer types without a window: a dropout's rate, a global average pool's keepdims
    ("dropout rate 1.5", "analyze", (TINY[:2] + [{"type": "dropout", "rate": 1.5}],), {},
     "layer 2 (dropout2): rate must be a number from 0 to 1 (1 excluded), got 1.5."),
    ("dropout rate -0.1", "analyze", (TINY[:2] + [{"type": "dropout", "rate": -0.1}],), {},
     "layer 2 (dropout2): rate must be a number from 0 to 1 (1 excluded), got -0.1."),
    ("dropout rate nan", "analyze", (TINY[:2] + [{"type": "dropout", "rate": NAN}],), {},
     "layer 2 (dropout2): rate must be a number from 0 to 1 (1 excluded), got nan."),
    ("dropout rate string", "analyze", (TINY[:2] + [{"type": "dropout", "rate": "0.5"}],), {},
     "layer 2 (dropout2): rate must be a number from 0 to 1 (1 excluded), got '0.5'."),
    ("dropout rate True", "analyze", (TINY[:2] + [{"type": "dropout", "rate": True}],), {},
     "layer 2 (dropout2): rate must be a number from 0 to 1 (1 excluded), got True."),
    ("dropout rate 0", "analyze", (TINY[:2] + [{"type": "dropout", "rate": 0}],), {}, None),
    ("gap keepdims string", "analyze", (TINY[:2] + [{"type": "gap", "keepdims": "yes"}],), {},
     "layer 2: keepdims must be True or False, got 'yes'."),
    ("gap on a flat input", "analyze", (TINY[:3] + [{"type": "gap"}],), {},
     "layer 3 (gap3): a gap layer needs a height x width x channels input, got 144."),
    ("dense after gap", "analyze", (TINY[:2] + [{"type": "gap"}, TINY[3]],), {}, None),
    ("dense after gap keepdims", "analyze",
     (TINY[:2] + [{"type": "gap", "keepdims": True}, TINY[3]],), {},
     "layer 3 (d): a dense layer needs a flat input but gets 1x1x4; add a flatten layer before it."),
    ("batchnorm field", "analyze", (TINY[:2] + [{"type": "batchnorm", "size": 5}],), {},
     "layer 2: unknown field(s) size for a batchnorm layer."),
    ("model a string", "analyze", ("conv",), {},
     "A model is a non-empty list of layer specs, starting with an input layer."),
    ("dtype list", "analyze", (TINY,), {"dtype": ["float32"]},
     "Unknown dtype ['float32']; use one of float64, float32, bfloat16, float16, int8."),
]


def refusal(function: str, args: tuple, kwargs: dict) -> str | None:
    """The message of the ValueError that a call raises, or None if it is accepted."""
    try:
        if function == "Machine":
            calc.Machine("m", **kwargs, source="")
        elif function == "estimate_training":
            layers, machine = args
            calc.estimate_training(layers, calc.Machine("m", **machine, source=""), **kwargs)
        else:
            getattr(calc, function)(*args, **kwargs)
    except ValueError as error:
        return str(error)
    return None


@pytest.mark.parametrize("function, args, kwargs, message", [c[1:] for c in REFUSED],
                         ids=[c[0] for c in REFUSED])
def test_bad_inputs_are_refused_as_the_browser_refuses_them(function, args, kwargs, message):
    assert refusal(function, args, kwargs) == message


def test_limits_keep_every_result_finite():
    """At the largest inputs and smallest rates allowed, times stay finite and positive."""
    assert calc.MAX_RAM_BYTES == calc.MAX_RAM_GIB * 2**30 < 2**53  # exact in the browser too
    assert calc.largest_batch(TINY, calc.MAX_RAM_BYTES) > 0
    assert 0 < calc.estimate_epoch_seconds(PRESETS["alexnet"], calc.MAX_FIELD,
                                           calc.MIN_FLOPS_PER_SECOND,
                                           validation_images=calc.MAX_FIELD) < 1e300
    fastest = calc.Machine("fastest", calc.MAX_FIELD, calc.MAX_RATE, calc.MAX_FIELD, 0, "")
    assert fastest.peak_flops < calc.MAX_FLOPS_PER_SECOND
    machine = calc.Machine("np", np.int64(2), np.float32(3.0), np.int32(8), np.float64(0), "")
    kept = (machine.cores, machine.clock_ghz, machine.flops_per_cycle, machine.bandwidth_gbs)
    assert list(map(type, kept)) == [int, float, int, float]  # plain numbers, as JSON carries them


# ----------------------------------------------------------- the calculators without JavaScript
def _calc_extension():
    """book/_ext/cnnbook_calc.py, which writes each calculator's no-JavaScript tables."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "book" / "_ext" / "cnnbook_calc.py"
    spec = importlib.util.spec_from_file_location("cnnbook_calc_ext", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_fallback_tables_carry_the_python_numbers(name):
    """Every preset, as a page without JavaScript would show it (tests/test_browser.py checks
    the four placed in the book in a browser, and that the widget shows the same texts)."""
    from bs4 import BeautifulSoup

    ext = _calc_extension()
    soup = BeautifulSoup(ext.model_fallback(name), "html.parser")
    summary = calc.analyze(PRESETS[name])
    rows = [{c: td["data-value"] for td in tr.select("td[data-col]") for c in [td["data-col"]]}
            for tr in soup.select(".cnnbook-calc__fallback-perlayer tbody tr")]
    columns = ("params", "activations", "macs", "rf", "jump")
    assert rows == [{"output": r["output"], **{c: str(int(r[c])) for c in columns}}
                    for r in summary.table.to_dict("records")]
    shown = {td["data-total"]: int(td["data-value"]) for td in soup.select("[data-total]")}
    assert shown == {k: v for k, v in summary.totals.items() if k != "output"}
    memory = calc.training_memory(PRESETS[name], batch_size=32, optimizer="adam", dtype="float32")
    values = {td["data-memory"]: int(td["data-value"]) for td in soup.select("[data-memory]")}
    assert values == {**{k: int(v) for k, v in memory.items()}, "total": int(memory.sum()),
                      "largest": calc.largest_batch(PRESETS[name], 2 * 2**30)}
    assert f"{summary.totals['params']:,}" in soup.select_one('[data-total="params"]').text
    time = BeautifulSoup(ext.time_fallback(name, "i3-540"), "html.parser")
    est = calc.estimate_training(PRESETS[name], calc.MACHINES["i3-540"], images=10_000, epochs=15)
    assert {td["data-result"]: td["data-value"] for td in time.select("[data-result]")} == {
        k: str(v) for k, v in est.items() if k != "machine"}


@pytest.mark.parametrize("seconds, text", [
    (0.5, "0.500\u00a0s"), (12.3456, "12.3\u00a0s"), (99.96, "100\u00a0s"), (126.2, "2.10\u00a0min"),
    (5000, "83.3\u00a0min"), (41737.36, "11.6\u00a0hours"), (1e7, "116\u00a0days"),
    (3.2e9, "101\u00a0years"), (1e20, "3.17e+12\u00a0years")])
def test_fallback_times_are_written_as_the_widget_writes_them(seconds, text):
    """calc-widget.js's secondsText (JavaScript's toPrecision and toExponential), in Python."""
    assert _calc_extension().seconds_text(seconds) == text
