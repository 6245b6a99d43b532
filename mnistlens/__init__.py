"""mnistlens: open the black box of MNIST classifiers.

Train reference models, explain their predictions, measure the explanations.

    >>> import mnistlens
    >>> model, meta = mnistlens.load_model("cnn.pt")
    >>> images, labels = mnistlens.load_mnist("test")
"""

__version__ = "0.1.0"

from .checkpoint import load_model, save_checkpoint  # noqa: E402
from .data import get_test_image, load_mnist  # noqa: E402
from .errors import MnistlensError  # noqa: E402

__all__ = [
    "__version__",
    "MnistlensError",
    "get_test_image",
    "load_mnist",
    "load_model",
    "save_checkpoint",
]
