"""Layer-wise relevance propagation (LRP, Bach et al. 2015), on Zennit.

LRP sends the target's logit back through the network layer by layer, each layer
sharing out the relevance it received among its inputs by a *rule*, so that (up to
what the biases and the stabilizers keep) every layer's relevance sums to the logit:
conservation, LRP's form of completeness. Which rule suits which layer is a
*composite* (Montavon et al. 2019, "Layer-wise relevance propagation: an overview");
Zennit (https://github.com/chr5tphr/zennit, LGPL-3, imported only) implements the
rules, the composites and the canonizer that merges batch norm into the layer before
it. Captum's `LRP` was not chosen: it fails on layers it has no rule for (captum#712,
captum#1232) and on modules used twice (captum#857); here every layer is checked
first and an uncovered one is refused by name.

Rules (`rule=`), for conv/linear layers; activations pass relevance through
unchanged, max pooling routes it to the maximum, average pooling shares it in
proportion, batch norm is merged into the conv or linear layer before it
(`SequentialMergeBatchNorm`), and mnistlens' `Normalize` passes it through, so each
pixel gets the relevance of its standardized value:

    epsilon            LRP-epsilon everywhere (with epsilon -> 0 on a ReLU net without
                       biases, this is gradient x input and conserves exactly)
    epsilon-plus       z+ for convolutions, epsilon for dense layers
    epsilon-plus-flat  as epsilon-plus, the first layer flat (Zennit's EpsilonPlusFlat)
    epsilon-gamma-box  z-box for the first layer, gamma for convolutions, epsilon for
                       dense layers (Zennit's EpsilonGammaBox); the box is the images'
                       range [0, 1] as the first layer sees it (after `Normalize`)
    alpha-beta         alpha=2, beta=1 for convolutions, epsilon for dense layers
    auto (default)     `default_rule(model)`: epsilon for a dense-only model,
                       epsilon-plus for a conv net (with the batch-norm canonizer where
                       there is batch norm): the measured choice, see the README

A user's model loaded by `mnistlens.load` is explained inside its input adapter, and a
torch.export program (.pt2), which has no layer modules for rules to attach to, gets
its linear and conv calls made modules first (`graph.with_layer_modules`).

Completeness is measured as conservation: reference 0, so the completeness error is
|sum(map) - logit| / |logit|. It is exact (to float precision) only for the epsilon
rule with epsilon -> 0 on a net without biases; biases, the z+ and gamma rules'
dropped negative parts and the stabilizers each keep some relevance, and the error
says how much.

    >>> maps = lrp(cnn, images[:8])                         # (8, 1, 28, 28)
    >>> maps = lrp(mlp, images[:8], rule="epsilon", epsilon=1e-9)
"""

from __future__ import annotations

import copy
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from mnistlens.attribution.common import Target, chunked, placed
from mnistlens.attribution.lrp_coverage import RULED, Parts, import_zennit, lrp_problem, unwrapped
from mnistlens.attribution.registry import register_method
from mnistlens.device import Device
from mnistlens.errors import MnistlensError
from mnistlens.models import Normalize

RULES = ("auto", "epsilon", "epsilon-plus", "epsilon-plus-flat", "epsilon-gamma-box", "alpha-beta")


def default_rule(model: nn.Module) -> str:
    """The composite `rule="auto"` picks, by kind of model (the batch-norm canonizer is
    added wherever there is batch norm, whatever the rule):

    - dense only: epsilon. On a ReLU net of dense layers, LRP-epsilon with a small
      epsilon is gradient x input on the standardized pixels (Ancona et al. 2018); it
      deletes the class far faster than z-box first (epsilon-gamma-box) on the shipped
      MLP (benchmarks/README.md);
    - conv (+ pooling, + batch norm): epsilon-plus, z+ in every convolution: sharp,
      mostly positive maps. On the shipped CNN it deletes and inserts faster than the
      flat first layer of Zennit's EpsilonPlusFlat (which spreads each unit's relevance
      evenly over its 3 x 3 window) and inserts far faster than epsilon everywhere,
      whose maps are gradient x input's speckle, 44% negative, and delete a little
      faster (benchmarks/README.md).
    """
    has_conv = any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in model.modules())
    return "epsilon-plus" if has_conv else "epsilon"


def _first_layer_input(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What the first conv or linear layer receives for `x` (z-box's bounds). Zennit's
    composites take the first such module in definition order for the first layer: a
    model that defines another one before is refused rather than explained wrongly."""
    layers = [(name, m) for name, m in net.named_modules() if isinstance(m, RULED)]
    seen: list[tuple[str, torch.Tensor]] = []
    handles = [
        m.register_forward_pre_hook(lambda _m, args, name=name: seen.append((name, args[0])))
        for name, m in layers
    ]
    try:
        with torch.no_grad():
            net(x)
    finally:
        for handle in handles:
            handle.remove()
    if seen[0][0] != layers[0][0]:
        raise MnistlensError(
            f"lrp rules epsilon-gamma-box and epsilon-plus-flat treat the first layer "
            f"apart, and Zennit takes the first defined, {layers[0][0]!r}, but "
            f"{seen[0][0]!r} runs first; define the layers in the order they run, or use "
            "another rule"
        )
    return seen[0][1]


def make_composite(rule: str, net: nn.Module, x: torch.Tensor, epsilon: float, gamma: float):
    """The Zennit composite for `rule` on `net` (its first input `x`, (1, ...) one image,
    for z-box's bounds: black and white images as the first layer sees them)."""
    import_zennit()
    from zennit import composites as zc
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.rules import Epsilon, Pass, ZBox

    canonizers = [SequentialMergeBatchNorm()]
    passing = [(Normalize, Pass())]  # relevance of a standardized pixel is the pixel's
    if rule == "epsilon":
        from zennit.types import Linear

        layer_map = passing + zc.layer_map_base() + [(Linear, Epsilon(epsilon=epsilon))]
        return zc.LayerMapComposite(layer_map=layer_map, canonizers=canonizers)
    if rule == "epsilon-plus":
        return zc.EpsilonPlus(epsilon=epsilon, layer_map=passing, canonizers=canonizers)
    if rule == "epsilon-plus-flat":
        _first_layer_input(net, x)  # checks that Zennit finds the first layer
        return zc.EpsilonPlusFlat(epsilon=epsilon, layer_map=passing, canonizers=canonizers)
    if rule == "alpha-beta":
        return zc.EpsilonAlpha2Beta1(epsilon=epsilon, layer_map=passing, canonizers=canonizers)
    low = _first_layer_input(net, torch.zeros_like(x))  # the box: [0, 1] pixels ...
    high = _first_layer_input(net, torch.ones_like(x))  # ... as the first layer sees them
    low, high = torch.minimum(low, high), torch.maximum(low, high)
    return zc.EpsilonGammaBox(
        low=low,
        high=high,
        epsilon=epsilon,
        gamma=gamma,
        layer_map=passing,
        first_map=[(nn.Linear, ZBox(low=low, high=high))],  # Zennit's covers convs only
        canonizers=canonizers,
    )


def _check_rule(rule: str, epsilon: float, gamma: float) -> str:
    key = str(rule).strip().lower().replace("_", "-")
    if key not in RULES:
        raise MnistlensError(f"unknown lrp rule {rule!r}; choose one of {', '.join(RULES)}")
    for name, value in (("epsilon", epsilon), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
            raise MnistlensError(f"lrp {name} must be a number >= 0, got {value!r}")
    return key


def conservation_reference(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor, **_ignored
) -> torch.Tensor:
    """LRP's reference score: 0, so that completeness is conservation (the map sums to the
    logit itself): -> (N,) zeros."""
    return torch.zeros(len(images))


def _relevance(parts: Parts, composite, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One chunk: the relevance of the target's logit (or of a contrast's two logits) at
    the net's input, `parts.prepare(x)`, in the shape of `x` (the preparation is
    elementwise and a reshape: relevance passes through it)."""
    import_zennit()
    from zennit.attribution import Gradient

    def start(output: torch.Tensor) -> torch.Tensor:
        # The relevance the top layer starts from: the target's logit, so conserved
        # relevance sums to it (Zennit starts from whatever tensor it is given). For a
        # contrast, +logit a and -logit b: the rules are linear in it, so the map is
        # map(a) - map(b) and sums to about logit a - logit b.
        if parts.contrast is None:
            return output * F.one_hot(t, output.shape[1]).to(output.dtype)  # (n, C)
        a, b = (F.one_hot(torch.tensor(c), output.shape[1]) for c in parts.contrast)
        return output * (a - b).to(output)  # (n, C)

    inputs = parts.prepare(x.detach()).requires_grad_(True)
    with Gradient(model=parts.net, composite=composite) as attributor:
        _, relevance = attributor(inputs, attr_output=start)
    return relevance.reshape(x.shape)  # (n, 1, 28, 28)


@register_method(
    "lrp",
    "layer-wise relevance propagation: the logit shared out layer by layer by LRP rules",
    aliases=("layerwise_relevance",),
    signed=True,
    claims_completeness=True,
    reference=conservation_reference,
    check=lrp_problem,
)
def lrp(
    model: nn.Module,
    images: torch.Tensor,
    target: Target = None,
    *,
    rule: str = "auto",
    epsilon: float = 1e-6,
    gamma: float = 0.25,
    batch_size: int = 256,
    progress: bool = False,
    device: Device = "auto",
) -> torch.Tensor:
    """Layer-wise relevance propagation with Zennit: (N, 1, 28, 28) -> (N, 1, 28, 28).

    Args:
        rule: a composite of `RULES` (see the module doc); "auto" is `default_rule`.
        epsilon: the epsilon rule's stabilizer (dense layers in every composite).
        gamma: the gamma rule's weight on positive parts (epsilon-gamma-box only).
    A model with a layer no rule covers is refused with its name (`lrp_problem`). The
    model is copied (the canonizer edits weights while it runs, and hooks never touch
    yours); each map sums to about the target's logit (see the module doc).
    """
    rule = _check_rule(rule, epsilon, gamma)
    if (problem := lrp_problem(model)) is not None:
        raise MnistlensError(problem)
    model, device = placed(model, device)
    model = copy.deepcopy(model).eval()  # eval before the z-box bounds' forward passes
    parts = unwrapped(model)
    if rule == "auto":
        rule = default_rule(parts.net)
    sample = parts.prepare(torch.zeros(1, 1, 28, 28, device=device))
    composite = make_composite(rule, parts.net, sample, float(epsilon), float(gamma))

    def compute(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if parts.per_image:  # a net that takes one image at a time
            pairs = zip(x.split(1), t.split(1), strict=True)
            return torch.cat([_relevance(parts, composite, xi, ti) for xi, ti in pairs])
        return _relevance(parts, composite, x, t)

    return chunked(compute, model, images, target, batch_size, progress, "lrp", device=device)
