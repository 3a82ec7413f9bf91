"""The assignment's two CIFAR-10 CNNs, layer for layer, in Keras 3, and the book's answer to them."""

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


def _block(filters: int, pool: bool = True) -> list:
    """Two 3x3 `same` convolutions, each followed by batch normalization and then the ReLU, and
    (``pool``) a 2x2 max pooling of stride 2 that halves the map. The convolutions have no bias:
    the batch normalization right after each subtracts any constant, and its beta does the bias's
    job. Its running averages, which the trained model uses, follow the last ten or so batches
    (momentum 0.9 rather than Keras's 0.99, which needs a few hundred batches to forget its start
    and so fails a quick preview of 141 batches)."""
    out = []
    for _ in range(2):
        out += [layers.Conv2D(filters, (3, 3), padding="same", use_bias=False),
                layers.BatchNormalization(momentum=0.9), layers.ReLU()]
    return out + [layers.MaxPooling2D((2, 2))] * pool


def bn_model(augment: bool = False) -> keras.Sequential:
    """The book's answer to the assignment: three blocks of 32, 64 and 128 channels with batch
    normalization, global average pooling into ten logits (289,642 parameters, under a third of
    variant 1's multiply-accumulates). ``augment=True`` puts random horizontal flips and shifts of
    up to 4 pixels in front (active only while training) and dropout before the last layer."""
    front = [layers.RandomFlip("horizontal"),
             layers.RandomTranslation(0.125, 0.125, fill_mode="reflect")] if augment else []
    back = [layers.Dropout(0.2)] if augment else []
    return keras.Sequential(
        [keras.Input(shape=INPUT_SHAPE), *front, *_block(32), *_block(64), *_block(128, pool=False),
         layers.GlobalAveragePooling2D(), *back, layers.Dense(NUM_CLASSES)],
        name="bn_aug" if augment else "bn",
    )


MODELS = {
    "conv": conv_model,  # variant 1: only convolutions, 1,191,502 parameters
    "pool": pool_model,  # variant 2: convolutions + max pooling, 589,390 parameters
    "bn": bn_model,  # batch normalization and global average pooling, 289,642 parameters
    "bn_aug": lambda: bn_model(augment=True),  # the same, trained on augmented images, dropout
}
TITLES = {
    "conv": "Variant 1: only convolutions",
    "pool": "Variant 2: convolutions + max pooling",
    "bn": "Batch normalization + global average pooling",
    "bn_aug": "Batch normalization + global average pooling + augmentation and dropout",
}


def build_model(name: str) -> keras.Sequential:
    """Build one of the book's models by name: ``"conv"`` or ``"pool"``."""
    try:
        return MODELS[name]()
    except KeyError:
        raise ValueError(f"Unknown model {name!r}: choose one of {', '.join(MODELS)}.") from None
