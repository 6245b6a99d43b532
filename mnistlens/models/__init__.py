"""The models mnistlens makes, and what every model needs to run.

- `registry.py`: builders registered by name, `build("cnn", ...)`, `list_models()`;
- `architectures.py`: the reference networks (linear, mlp, cnn) and `Normalize`;
- `autoencoder.py`: the MNIST autoencoder (what a plausible digit looks like);
- `runtime.py`: layers by name, eval mode without side effects (`evaluating`), and the
  fast copy for forward passes over many images (`for_inference`).

    >>> from mnistlens import models
    >>> models.list_models()
    ['cnn', 'linear', 'mlp']
    >>> net = models.build("mlp", hidden=(256,))
"""

from mnistlens.models.registry import build, list_models, register, task_of

# isort: split
from mnistlens.models.architectures import Normalize, cnn, linear, mlp
from mnistlens.models.autoencoder import Autoencoder
from mnistlens.models.runtime import (
    COPY_FROM_ROWS,
    FAST_ROWS,
    conv_layer_names,
    evaluating,
    for_inference,
    get_layer,
    is_convolutional,
    layer_names,
    modules_of,
)

__all__ = [
    "Autoencoder",
    "COPY_FROM_ROWS",
    "FAST_ROWS",
    "Normalize",
    "build",
    "cnn",
    "conv_layer_names",
    "evaluating",
    "for_inference",
    "get_layer",
    "is_convolutional",
    "layer_names",
    "linear",
    "list_models",
    "mlp",
    "modules_of",
    "register",
    "task_of",
]
