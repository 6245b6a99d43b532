"""Attribution maps: which pixels made the model say what it said.

Every method has one signature, after Captum's uniform `attribute()`:

    method(model, images, target=None, **options) -> maps

    images: (N, 1, 28, 28) float32 in [0, 1] (the library's input convention)
    target: None (the predicted class), an int, or a (N,) tensor of classes
    maps:   (N, 1, 28, 28) float32, one map per image

Each method is Captum's (https://captum.ai); what Captum lacks is written here, with
a comment saying why; LRP is Zennit's (`lrp.py` says why not Captum's). Every method
works for any `nn.Module` mapping such images to (N, C) scores, not only mnistlens
models. While explaining, the model is in eval mode
and its parameters do not require gradients (so nothing writes into their .grad);
both are restored after. Images go through in chunks of `batch_size`, so memory
stays bounded for any N. Every method takes `device=` ("auto", the default: CUDA when
available, else the CPU; "cpu"; "cuda[:N]"; see `mnistlens.device`): the model runs
there (as a copy if it is elsewhere; yours never moves) and the maps come back on the CPU.

The package, one idea per file:
    registry.py      what is known about each method (`register_method`, `get_spec`)
    common.py        input checks, targets, chunking, per-image seeding, baselines
    gradients.py     saliency, input x gradient, guided backprop
    reference.py     integrated gradients, DeepLIFT, GradientSHAP (completeness)
    perturbation.py  occlusion
    cam.py           Grad-CAM, Grad-CAM x input
    lrp.py           layer-wise relevance propagation (Zennit's rules; conservation)
    lrp_coverage.py  what LRP runs on, and whether a rule covers every layer
    smooth.py        SmoothGrad over any method
    fastig.py        integrated gradients to a completeness tolerance (what Captum lacks)

Captum is imported inside each method, never at the top of a module: `import captum.attr`
pulls in matplotlib.pyplot and IPython, which importing mnistlens (and `mnistlens
--help`) should not pay. Only a method that runs needs it.

    >>> maps = saliency(model, images[:8])                     # (8, 1, 28, 28)
    >>> maps, delta = integrated_gradients(model, images[:8], return_delta=True)
    >>> attribute("gradcam", model, images[:8]).shape
    torch.Size([8, 1, 28, 28])
"""

# Registration order is the order list_methods() shows: gradients first, then the
# reference methods, perturbation, class activation maps, LRP, and SmoothGrad over them.
from mnistlens.attribution.gradients import guided_backprop, input_x_gradient, saliency

# isort: split
from mnistlens.attribution.reference import (
    deeplift,
    gradient_shap,
    integrated_gradients,
    shap_baselines,
)

# isort: split
from mnistlens.attribution.perturbation import occlusion

# isort: split
from mnistlens.attribution.cam import default_cam_layer, grad_cam, grad_cam_x_input

# isort: split
from mnistlens.attribution.lrp import lrp

# isort: split
from mnistlens.attribution.smooth import smoothgrad

# isort: split
from mnistlens.attribution.common import (
    BASELINES,
    INPUT_RANGE,
    Target,
    check_images,
    explaining,
    make_baseline,
    mean_image,
    resolve_target,
)
from mnistlens.attribution.registry import (
    MethodSpec,
    aliases,
    applicable_methods,
    attribute,
    get_spec,
    list_methods,
    method_options,
    register_method,
    resolve_method,
    why_not,
)

__all__ = [
    "BASELINES",
    "INPUT_RANGE",
    "MethodSpec",
    "Target",
    "aliases",
    "applicable_methods",
    "attribute",
    "check_images",
    "deeplift",
    "default_cam_layer",
    "explaining",
    "get_spec",
    "grad_cam",
    "grad_cam_x_input",
    "gradient_shap",
    "guided_backprop",
    "input_x_gradient",
    "integrated_gradients",
    "list_methods",
    "lrp",
    "make_baseline",
    "mean_image",
    "method_options",
    "occlusion",
    "register_method",
    "resolve_method",
    "resolve_target",
    "saliency",
    "shap_baselines",
    "smoothgrad",
    "why_not",
]
