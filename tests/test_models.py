"""The two CNNs match the assignment's summaries layer for layer."""

from __future__ import annotations

import pytest

from cnnbook import models

# (layer type, output shape without the batch axis, parameters), from the assignment's summaries
CONV_STACK = [
    ("Conv2D", (30, 30, 8), 224),
    ("Conv2D", (28, 28, 24), 1752),
    ("Conv2D", (26, 26, 36), 7812),
    ("Conv2D", (22, 22, 48), 43248),
    ("Conv2D", (22, 22, 36), 84708),
    ("Conv2D", (22, 22, 36), 63540),
    ("Conv2D", (14, 14, 64), 186688),
]
CONV_HEAD = [("Flatten", (12544,), 0), ("Dense", (64,), 802880), ("Dense", (10,), 650)]
POOL = [
    ("Conv2D", (32, 32, 8), 224),
    ("Conv2D", (32, 32, 24), 1752),
    ("MaxPooling2D", (31, 31, 24), 0),
    ("Conv2D", (31, 31, 36), 7812),
    ("Conv2D", (31, 31, 48), 43248),
    ("MaxPooling2D", (30, 30, 48), 0),
    ("Conv2D", (30, 30, 36), 84708),
    ("Conv2D", (30, 30, 36), 63540),
    ("MaxPooling2D", (15, 15, 36), 0),
    ("Conv2D", (7, 7, 64), 186688),
    ("Flatten", (3136,), 0),
    ("Dense", (64,), 200768),
    ("Dense", (10,), 650),
]


def _layers(model):
    return [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
            for layer in model.layers]


@pytest.mark.parametrize("build,expected,total", [
    (models.conv_stack, CONV_STACK, 387_972),
    (models.conv_model, CONV_STACK + CONV_HEAD, 1_191_502),
    (models.pool_model, POOL, 589_390),
])
def test_layers_shapes_and_parameters_match_the_assignment(build, expected, total):
    model = build()
    assert _layers(model) == expected
    assert model.count_params() == total
    assert model.input_shape == (None, 32, 32, 3)
    assert model.output_shape == (None, *expected[-1][1])


def test_models_by_name():
    assert models.build_model("conv").count_params() == 1_191_502
    assert models.build_model("pool").count_params() == 589_390
    assert models.build_model("bn").count_params() == 289_642
    assert models.build_model("bn_aug").count_params() == 289_642  # augmentation, dropout: none
    with pytest.raises(ValueError,
                       match="Unknown model 'alexnet': choose one of conv, pool, bn, bn_aug"):
        models.build_model("alexnet")


def test_head_ends_in_ten_logits():
    for name in models.MODELS:
        model = models.build_model(name)
        assert model.output_shape == (None, 10)
        assert model.layers[-1].get_config()["activation"] == "linear"  # the loss applies softmax


def test_bn_models_match_their_description():
    """Three blocks of 32, 64 and 128 channels, each convolution without bias and followed by batch
    normalization (momentum 0.9) and a ReLU; global average pooling; augmentation only in bn_aug."""
    plain, augmented = models.build_model("bn"), models.build_model("bn_aug")
    assert [type(layer).__name__ for layer in augmented.layers[:2]] == ["RandomFlip",
                                                                       "RandomTranslation"]
    assert [type(layer).__name__ for layer in augmented.layers[-3:]] == [
        "GlobalAveragePooling2D", "Dropout", "Dense"]
    assert _layers(plain) == _layers(augmented)[2:-2] + _layers(augmented)[-1:]
    convs = [layer for layer in plain.layers if type(layer).__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [32, 32, 64, 64, 128, 128]
    assert not any(c.use_bias for c in convs)
    norms = [layer for layer in plain.layers if type(layer).__name__ == "BatchNormalization"]
    assert len(norms) == 6 and {n.momentum for n in norms} == {0.9}
    assert [shape for kind, shape, _ in _layers(plain) if kind == "MaxPooling2D"] == [
        (16, 16, 32), (8, 8, 64)]
    assert sum(n.count_params() for n in norms) == 4 * 448  # gamma, beta, mean, variance
