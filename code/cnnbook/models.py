"""The assignment's two CIFAR-10 CNNs, layer for layer, in Keras 3."""

from __future__ import annotations

import keras
from keras import layers

INPUT_SHAPE = (32, 32, 3)
NUM_CLASSES = 10


def conv_stack() -> keras.Sequential:
    """Variant 1 without its head: seven convolutions, no pooling (387,972 parameters)."""
    return keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(8, (3, 3), activation="relu", padding="valid"),  # 30x30x8
            layers.Conv2D(24, (3, 3), activation="relu", padding="valid"),  # 28x28x24
            layers.Conv2D(36, (3, 3), activation="relu"),  # 26x26x36
            layers.Conv2D(48, (5, 5), activation="relu", padding="valid"),  # 22x22x48
            layers.Conv2D(36, (7, 7), activation="relu", padding="same"),  # 22x22x36
            layers.Conv2D(36, (7, 7), activation="relu", padding="same"),  # 22x22x36
            layers.Conv2D(64, (9, 9), activation="relu"),  # 14x14x64
        ],
        name="conv_only",
    )


def _add_head(model: keras.Sequential) -> keras.Sequential:
    """The classifier both variants share: Flatten, Dense 64 (ReLU), Dense 10 (logits)."""
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(NUM_CLASSES))  # logits: the loss applies the softmax
    return model


def conv_model() -> keras.Sequential:
    """Variant 1, "only convolutions": the conv stack plus the head (1,191,502 parameters)."""
    return _add_head(conv_stack())


def pool_model() -> keras.Sequential:
    """Variant 2, "convolutions + max pooling" (589,390 parameters)."""
    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE),
            layers.Conv2D(8, (3, 3), activation="relu", padding="same"),  # 32x32x8
            layers.Conv2D(24, (3, 3), activation="relu", padding="same"),  # 32x32x24
            layers.MaxPooling2D((2, 2), strides=(1, 1), padding="valid"),  # 31x31x24
            layers.Conv2D(36, (3, 3), activation="relu", padding="same"),  # 31x31x36
            layers.Conv2D(48, (5, 5), activation="relu", padding="same"),  # 31x31x48
            layers.MaxPooling2D((2, 2), strides=(1, 1), padding="valid"),  # 30x30x48
            layers.Conv2D(36, (7, 7), activation="relu", padding="same"),  # 30x30x36
            layers.Conv2D(36, (7, 7), activation="relu", padding="same"),  # 30x30x36
            layers.MaxPooling2D((2, 2), padding="valid"),  # 15x15x36 (stride = pool size)
            layers.Conv2D(64, (9, 9), activation="relu"),  # 7x7x64
        ],
        name="conv_pool",
    )
    return _add_head(model)


MODELS = {
    "conv": conv_model,  # variant 1: only convolutions, 1,191,502 parameters
    "pool": pool_model,  # variant 2: convolutions + max pooling, 589,390 parameters
}
TITLES = {
    "conv": "Variant 1: only convolutions",
    "pool": "Variant 2: convolutions + max pooling",
}


def build_model(name: str) -> keras.Sequential:
    """Build one of the book's models by name: ``"conv"`` or ``"pool"``."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(MODELS)}.") from None
