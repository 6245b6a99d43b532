"""Feature visualization: the input a class logit or a hidden unit likes best.

Activation maximization (Erhan et al. 2009; Olah et al. 2017, "Feature
Visualization", distill.pub) by gradient ascent from faint noise. Unregularized,
the optimum is high-frequency noise that no digit looks like, the known weak spot
of general tools on 28 x 28 grayscale. Three regularizers turn it into strokes:

- the image is sigmoid(logits), so it always stays in the model's input range [0, 1];
- random jitter (shifts of a few pixels) each step: a pattern must work wherever
  it lands, as a stroke does, so pixel-exact noise does not pay;
- total variation and a small blur every few steps favour smooth, connected
  strokes; an L1 penalty on ink keeps the background black, as in MNIST.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mnistlens.data import gaussian_blur
from mnistlens.errors import MnistlensError
from mnistlens.internals.activations import capture
from mnistlens.models import evaluating, get_layer


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels: (N, 1, H, W) -> (N,)."""
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=(1, 2, 3))
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=(1, 2, 3))
    return dx + dy


def _jitter(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift by up to max_shift pixels, filling with black (a roll would wrap strokes)."""
    if max_shift == 0:
        return x
    dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    top, left = max_shift + dy, max_shift + dx
    return padded[:, :, top : top + 28, left : left + 28]


class Adam:
    """Adam (Kingma & Ba 2015) on one tensor, as torch.optim.Adam computes it with
    betas (0.9, 0.999) and eps 1e-8. Why not torch.optim.Adam itself: its first use in
    a process imports torch._dynamo, slow to import, which the app's Inside page paid
    for its first picture."""

    def __init__(self, param: torch.Tensor, lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param, self.lr, self.betas, self.eps = param, lr, betas, eps
        self.mean = torch.zeros_like(param)  # first moment of the gradient
        self.square = torch.zeros_like(param)  # second moment
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """One update from param.grad, which is then cleared."""
        (b1, b2), grad = self.betas, self.param.grad
        self.steps += 1
        self.mean.lerp_(grad, 1 - b1)
        self.square.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        denominator = (self.square.sqrt() / math.sqrt(1 - b2**self.steps)).add_(self.eps)
        self.param.addcdiv_(self.mean, denominator, value=-self.lr / (1 - b1**self.steps))
        self.param.grad = None


def maximize(
    model: nn.Module,
    target: int,
    layer: str | None = None,
    *,
    steps: int = 300,
    lr: float = 0.1,
    jitter: int = 2,
    tv_weight: float = 0.03,
    ink_weight: float = 0.05,
    blur_every: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, list[float]]:
    """Optimize an input to maximize a class logit or a hidden unit.

    Args:
        target: class index when `layer` is None, else the unit (channel) index in
            `layer` (conv channels are averaged over their spatial positions; for a
            ReLU layer its input, the pre-activation, is maximized).
        steps, lr: Adam steps and learning rate on the image's logits.
        jitter: maximum random shift in pixels per step.
        tv_weight: cost per unit of total variation (summed over the image), in units
            of the objective; a digit's outline has a total variation of about 150.
        ink_weight: cost per unit of ink (summed); an MNIST digit has about 100.
        blur_every: apply a small Gaussian blur to the image every this many steps.

    For a class, the objective is its logit minus the mean of the other logits: the
    raw logit alone is also raised by ink that raises every class (for many models
    an all-white image is a confident 8).

    Returns: image (1, 28, 28) in [0, 1], and the objective after each step.
    """
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.randn(1, 1, 28, 28, generator=gen) * 0.5 - 3.0).requires_grad_(True)
    optimizer = Adam(logits, lr=lr)
    history: list[float] = []
    with evaluating(model, freeze=True):
        # A ReLU's output is 0 with zero gradient wherever the unit is off, so ascent
        # from noise could never start: for ReLU layers, maximize the pre-activation.
        relu = layer is not None and isinstance(get_layer(model, layer), nn.ReLU)
        with capture(model, layer or [], of="input" if relu else "output", detach=False) as acts:

            def objective(x: torch.Tensor) -> torch.Tensor:
                out = model(x)
                if layer is None:
                    if not 0 <= target < out.shape[1]:
                        raise MnistlensError(f"class {target} is out of range 0-{out.shape[1] - 1}")
                    others = (out[0].sum() - out[0, target]) / (out.shape[1] - 1)
                    return out[0, target] - others
                act = acts[layer][0]
                if not 0 <= target < act.shape[0]:
                    raise MnistlensError(
                        f"unit {target} is out of range; {layer} has units 0 to {act.shape[0] - 1}"
                    )
                return act[target].mean()

            for step in range(steps):
                image = torch.sigmoid(logits)
                value = objective(_jitter(image, jitter, gen))
                penalty = tv_weight * total_variation(image)[0] * 28 * 27 * 2 / 2
                penalty = penalty + ink_weight * image.sum()
                (penalty - value).backward()
                optimizer.step()
                if blur_every and (step + 1) % blur_every == 0:
                    with torch.no_grad():
                        blurred = gaussian_blur(torch.sigmoid(logits), 3, 0.5)
                        logits.copy_(torch.logit(blurred.clamp(1e-4, 1 - 1e-4)))
                history.append(value.item())
    return torch.sigmoid(logits).detach()[0], history
