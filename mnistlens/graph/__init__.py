"""A model's graph: what its layers are, and rewrites that keep its function.

- `analysis.py`: one torch.fx pass that knows the layers in the order they run
  (`analyze(model) -> ModelInfo`: Grad-CAM's layer, the hidden layers, the top-down
  order of the randomization check);
- `rewrite.py`: functional ReLUs into modules, a final softmax removed, batch norm
  folded, the frozen fast copy the gradient methods run on, and a torch.export
  program's layers as modules (for LRP's rules).
"""

from mnistlens.graph.analysis import Layer, ModelInfo, analyze, trace
from mnistlens.graph.rewrite import (
    fold_batchnorm,
    prepare_for_explanation,
    strip_output_softmax,
    with_layer_modules,
    with_relu_modules,
)

__all__ = [
    "Layer",
    "ModelInfo",
    "analyze",
    "fold_batchnorm",
    "prepare_for_explanation",
    "strip_output_softmax",
    "trace",
    "with_layer_modules",
    "with_relu_modules",
]
