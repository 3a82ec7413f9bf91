"""Helper package of the CIFAR-10 CNN course book: data, models, training runs, calculators.

Chapters import it one way::

    import cnnbook
    data = cnnbook.data.load_cifar10()
"""

import contextlib
import os
import sys

# Keras 3 runs on TensorFlow here. TensorFlow's C++ INFO lines are hidden; oneDNN stays on.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def _stderr_silenced():
    """Send file descriptor 2 to /dev/null: TensorFlow's C++ start-up lines bypass Python."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (some notebook front ends)
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


if "tensorflow" not in sys.modules:
    with _stderr_silenced():
        import tensorflow  # noqa: F401  (absl prints "oneDNN custom operations are on" at import)

from . import calc, data, explore, models, report, train  # noqa: E402

__all__ = ["calc", "data", "explore", "models", "report", "train"]
__version__ = "0.1.0"
