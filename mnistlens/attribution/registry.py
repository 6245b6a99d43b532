"""The method registry: everything mnistlens knows about an attribution method, in one place.

Each method module registers its functions with `register_method`, stating what the
CLI, the app, `explain` and `measure` need to know: its aliases, whether its maps are
signed, whether it claims completeness (maps sum to f(x) - f(baseline)), whether it
needs a conv layer or ReLU modules (or passes a check of its own), whether it is
random (seeded per image), and
which of the shared options (baseline, n_steps, tol, data_dir) it takes. Every method
takes `device=` (keyword only; see `mnistlens.device`) and returns its maps on the CPU.

    >>> list_methods()[:3]
    ['saliency', 'input_x_gradient', 'guided_backprop']
    >>> get_spec("ig").claims_completeness
    True
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from mnistlens.attribution.common import Target
from mnistlens.device import Device
from mnistlens.errors import MnistlensError

# Options several methods share, as the CLI and the app offer them.
SHARED_OPTIONS = ("baseline", "n_steps", "tol", "data_dir")


@dataclass(frozen=True)
class MethodSpec:
    """What the rest of mnistlens may know about one attribution method."""

    name: str
    function: Callable[..., torch.Tensor]
    summary: str
    aliases: tuple[str, ...] = ()
    signed: bool = False  # maps have meaningful negative values
    claims_completeness: bool = False  # maps sum to f(x) - f(baseline)
    needs_conv: bool = False  # works on a convolutional layer's feature maps
    needs_relu_modules: bool = False  # Captum overrides the gradient of nn.ReLU modules
    random: bool = False  # draws noise (seeded per image from its pixels)
    options: tuple[str, ...] = ()  # which SHARED_OPTIONS it accepts
    # For methods that claim completeness: reference(model, images, target, *, device,
    # **options) -> (N,) the score the maps are measured from, f(baseline) (or its
    # expectation), on the CPU.
    reference: Callable[..., torch.Tensor] | None = None
    # A method's own applicability test beyond the flags above: check(model) -> why it
    # cannot explain `model` (one line), or None. E.g. LRP needs a rule for every layer.
    check: Callable[[nn.Module], str | None] | None = None


_METHODS: dict[str, MethodSpec] = {}
_ALIASES: dict[str, str] = {}


def register_method(name: str, summary: str, **properties) -> Callable:
    """Decorator adding an attribution function to the registry (see MethodSpec).

    The function is `method(model, images, target=None, *, device="auto", **options)`:
    `attribute` passes every method the device to run on."""
    unknown = set(properties.get("options", ())) - set(SHARED_OPTIONS)
    if unknown:
        raise ValueError(f"unknown shared options {sorted(unknown)} for method {name}")
    if properties.get("claims_completeness") and properties.get("reference") is None:
        raise ValueError(f"method {name} claims completeness: give its reference score")

    def wrap(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if "device" not in inspect.signature(function).parameters:
            raise ValueError(f"method {name} must take device= (see mnistlens.device)")
        spec = MethodSpec(name, function, summary, **properties)
        _METHODS[name] = spec
        for alias in spec.aliases:
            _ALIASES[alias] = name
        return function

    return wrap


def list_methods() -> list[str]:
    """Canonical method names, in registration order."""
    return list(_METHODS)


def aliases() -> dict[str, str]:
    """alias -> canonical name."""
    return dict(_ALIASES)


def resolve_method(name: str) -> str:
    """Canonical name for a method name or alias (ig, sg, gradcam, ...)."""
    key = str(name).strip().lower().replace("-", "_")
    key = _ALIASES.get(key, key)
    if key not in _METHODS:
        raise MnistlensError(
            f"unknown attribution method {name!r}; choose from {', '.join(_METHODS)} "
            f"(aliases: {', '.join(_ALIASES)})"
        )
    return key


def get_spec(name: str) -> MethodSpec:
    """The MethodSpec of a method name or alias."""
    return _METHODS[resolve_method(name)]


def method_options(name: str, **shared) -> dict:
    """The shared options (baseline=, n_steps=, tol=, data_dir=) that method `name`
    takes, dropping those it does not and those that are None:

        >>> method_options("deeplift", baseline="blur", n_steps=50, tol=None)
        {'baseline': 'blur'}
    """
    unknown = set(shared) - set(SHARED_OPTIONS)
    if unknown:
        raise MnistlensError(f"unknown shared options {sorted(unknown)}; known: {SHARED_OPTIONS}")
    spec = get_spec(name)
    return {k: v for k, v in shared.items() if k in spec.options and v is not None}


def why_not(name: str, model: nn.Module) -> str | None:
    """Why method `name` cannot explain `model`, or None if it can."""
    from mnistlens.graph import analyze, with_relu_modules

    spec = get_spec(name)
    info = analyze(model)
    if spec.needs_conv and info.cam_layer is None:
        if info.traced and info.functional_relus:  # what grad_cam itself will rewrite
            info = analyze(with_relu_modules(model))
        if info.cam_layer is None:
            return f"{spec.name} needs a convolutional layer; this model has none"
    if spec.needs_relu_modules and not info.traced:
        return (
            f"{spec.name} needs each ReLU as an nn.ReLU module, and this model cannot be "
            "traced by torch.fx to check or rewrite them"
        )
    if spec.check is not None:
        return spec.check(model)
    return None


def applicable_methods(model: nn.Module) -> list[str]:
    """The methods that can explain `model` (e.g. no Grad-CAM without a conv layer)."""
    return [name for name in _METHODS if why_not(name, model) is None]


def attribute(
    method: str,
    model: nn.Module,
    images: torch.Tensor,
    /,
    target: Target = None,
    *,
    device: Device = "auto",
    **options,
) -> torch.Tensor:
    """Run a method by name: attribute("ig", model, images, n_steps=32) -> (N, 1, 28, 28),
    on the CPU, computed on `device` ("auto": CUDA if available, else the CPU).

    The first three arguments are positional-only, so that a method's own option of the
    same name (integrated_gradients' `method="riemann_trapezoid"`) passes through."""
    return get_spec(method).function(model, images, target, device=device, **options)
