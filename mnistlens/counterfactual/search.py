"""What would change its mind? The smallest plausible change that changes the answer.

`counterfactuals(model, images, target)` searches, for a whole batch at once, a changed
image x that the model calls `target` (default: each image's runner-up) by a logit
margin kappa, keeping the change small:

    plain  (Wachter et al. 2017; elastic net as in CEM): x = x0 + delta,
           c * hinge(target) + beta * |delta|_1 + |delta|_2^2
    proto  (after Van Looveren & Klaise 2019): x = x0 + decode(z) - decode(z0), z
           starting at the digit's own code z0 in the shipped autoencoder,
           c * hinge(target) + beta * |x - x0|_1 + |x - x0|_2^2 + theta * |z - proto|^2

hinge(target) = max(max_{j != target} z_j - z_target + kappa, 0) on the logits, and
proto the mean code of the K training digits of the target class nearest to the
digit's own (`prototypes.py`). CFProto adds an autoencoder reconstruction term to keep
a free pixel change near the digits; here the change is drawn by the decoder itself,
which keeps it to strokes the autoencoder knows (measured on 100 test digits with the
shipped CNN: the MLP and LeNet agree with the target on 80% and 76% of proto
counterfactuals, on 0% and 1% of plain ones: benchmarks/README.md). In plain mode the
L1 term is a soft threshold after each Adam step (ISTA's proximal step, as CEM and
CFProto do), so pixels that need not change stay exactly as they were. Among the
iterates that reach the margin, the one with the least L1 change is kept; images with
none get a ten times larger `c` and another round.

Contrastive mode (Dhurandhar et al. 2018, CEM): "pertinent-negative" only adds ink, the
least that makes the model say another class (`target` if given, else any), first drawn
by the decoder (x0 + relu(decode(z) - decode(z0))), then, for the digits not reached,
pixel by pixel with CEM's autoencoder term;
"pertinent-positive" keeps the least of the digit's own ink for which the model still
says its class.

    >>> found = counterfactuals(cnn, images[:8])          # to each digit's runner-up
    >>> found.valid.all(), found.l1.median()
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mnistlens.device import Device, resolve_device
from mnistlens.errors import MnistlensError

MODES = ("proto", "plain", "pertinent-negative", "pertinent-positive")

# Defaults, chosen on 100 test digits (every 100th) with the shipped CNN
# (benchmarks/README.md, "Counterfactuals"): a margin of 3 logits and theta 3 took the
# other models' agreement with proto counterfactuals from 49% (margin 0.5, theta 1) to
# 76-80%, at a median L1 change of 34 instead of 28.
STEPS = 100
LR = 0.01  # per pixel; the code's steps in proto mode are ten times larger
C = 1.0
BETA = 0.1
THETA = 3.0
GAMMA = 1.0  # pertinent negatives: the weight of the autoencoder's reconstruction error
KAPPA = 3.0
ROUNDS = 3  # a round with c ten times larger for images not yet changed


@dataclass
class Counterfactuals:
    """A batch of counterfactuals and what they did.

    images (N, 1, 28, 28) in [0, 1]; original the input; target, before (the model's
    answer on the original), prediction (on the counterfactual) (N,) int64; valid (N,)
    bool: the model now says the target (pertinent-negative without a target: any other
    class; pertinent-positive: still its class); probability (N,) of the target;
    probabilities_before, probabilities (N, 10): the model's on the original and on the
    counterfactual;
    l1, l0 (N,): the change's absolute sum and how many pixels changed (> 1e-3);
    plausibility (N,): the autoencoder's reconstruction error of the counterfactual
    (mean squared, per pixel; lower = more like the digits it was trained on; None
    without an autoencoder); seconds for the whole batch.
    """

    images: torch.Tensor
    original: torch.Tensor
    target: torch.Tensor
    before: torch.Tensor
    prediction: torch.Tensor
    valid: torch.Tensor
    probability: torch.Tensor
    probabilities_before: torch.Tensor
    probabilities: torch.Tensor
    l1: torch.Tensor
    l0: torch.Tensor
    plausibility: torch.Tensor | None
    seconds: float
    mode: str

    def record(self, i: int) -> dict:
        """Image i's numbers, JSON-ready."""
        return {
            "mode": self.mode,
            "target": int(self.target[i]),
            "before": int(self.before[i]),
            "prediction": int(self.prediction[i]),
            "valid": bool(self.valid[i]),
            "probability": float(self.probability[i]),
            "l1": float(self.l1[i]),
            "l0": int(self.l0[i]),
            "plausibility": None if self.plausibility is None else float(self.plausibility[i]),
            "seconds": self.seconds / len(self.images),
        }


def _hinge(logits: torch.Tensor, target: torch.Tensor, kappa: float, away: bool) -> torch.Tensor:
    """(N, C) logits, (N,) classes -> (N,) losses. away=False: make `target` the top class
    by a margin kappa; away=True: make any class but `target` top by kappa."""
    mine = logits.gather(1, target[:, None]).squeeze(1)
    others = logits.scatter(1, target[:, None], float("-inf")).amax(dim=1)
    gap = (mine - others) if away else (others - mine)
    return (gap + kappa).clamp(min=0)


def runner_up(scores: torch.Tensor) -> torch.Tensor:
    """Each image's second most likely class, the default target: (N, 10) logits or
    probabilities -> (N,) int64."""
    return scores.topk(2, dim=1).indices[:, 1]


def _goal(target, logits: torch.Tensor, mode: str) -> tuple[torch.Tensor, bool]:
    """The class each image is searched towards, checked, from the model's (N, 10) logits
    on the originals: -> ((N,) classes, away). away: the search leaves that class for any
    other (a pertinent negative without a target: the image's own class)."""
    before = logits.argmax(dim=1)
    n = len(before)
    if mode == "pertinent-positive":
        if target is not None and not torch.equal(
            torch.as_tensor(target, device=before.device).expand(n), before
        ):
            raise MnistlensError(
                "a pertinent positive keeps the model's own answer: give no target (--to)"
            )
        return before, False
    if target is None:
        return (before, True) if mode == "pertinent-negative" else (runner_up(logits), False)
    target = torch.as_tensor(target, dtype=torch.long).flatten().to(before.device)
    if len(target) == 1:
        target = target.expand(n).clone()
    if len(target) != n:
        raise MnistlensError(f"{len(target)} targets for {n} images; give one, or one each")
    if ((target < 0) | (target > 9)).any():
        raise MnistlensError(f"a target is a digit from 0 to 9, got {int(target.max())}")
    same = (target == before).nonzero().squeeze(1)
    if len(same):
        raise MnistlensError(
            f"image {int(same[0])}: the model already says {int(before[same[0]])}; "
            "choose another target (default: its runner-up)"
        )
    return target, False


def counterfactuals(
    model: nn.Module,
    images: torch.Tensor,
    target: int | torch.Tensor | None = None,
    *,
    mode: str = "proto",
    autoencoder: nn.Module | None = None,
    steps: int = STEPS,
    lr: float = LR,
    c: float = C,
    beta: float = BETA,
    theta: float = THETA,
    gamma: float = GAMMA,
    kappa: float = KAPPA,
    rounds: int = ROUNDS,
    device: Device = "auto",
) -> Counterfactuals:
    """Counterfactuals for a batch: (N, 1, 28, 28) in [0, 1] -> Counterfactuals.

    Args:
        target: the class each image should become: one for all, one per image, or None
            (each image's runner-up; pertinent-negative: any other class).
        mode: "proto", "plain", "pertinent-negative" or "pertinent-positive" (above).
        autoencoder: for proto mode's search and for `plausibility` (default: the
            shipped one, `prototypes.load_autoencoder()`; plain mode runs without one,
            then with no plausibility).
        steps, lr: Adam steps and rate per round; c, beta, theta, kappa: the
            objective's weights and margin (module docstring); gamma: the weight of
            the autoencoder's reconstruction error in a pertinent negative's search.
        device: where to search; results on the CPU. Deterministic: no random draws.
    """
    from mnistlens.counterfactual.prototypes import load_autoencoder, prototypes
    from mnistlens.data import check_images
    from mnistlens.device import model_on
    from mnistlens.models import evaluating

    if mode not in MODES:
        raise MnistlensError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    start = time.perf_counter()
    dev = resolve_device(device)
    x0 = check_images(images).to(dev)
    net = model_on(model, dev)
    ae = autoencoder
    if ae is None:
        try:  # plain mode searches without it, and only measures plausibility with it
            ae = load_autoencoder()
        except MnistlensError:
            if mode != "plain":
                raise
    ae = None if ae is None else model_on(ae, dev)
    with evaluating(net, freeze=True), torch.no_grad():
        logits0 = net(x0)
    target, away = _goal(target, logits0, mode)
    proto = None
    if mode == "proto":
        with torch.no_grad(), evaluating(ae, freeze=True):
            proto = prototypes(ae, x0, target)

    def changed(delta: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        if mode == "pertinent-negative":  # only add ink, where there is room for it
            return start + _passing(delta, 0, None) * (1 - start)
        if mode == "pertinent-positive":  # keep a share of each pixel's own ink
            return start * (1 - _passing(delta, 0, 1))
        return (start + delta).clamp(0, 1)

    def size(x: torch.Tensor, start: torch.Tensor) -> torch.Tensor:  # (N,): the L1 counted
        moved = x if mode == "pertinent-positive" else x - start  # kept ink, or the change
        return moved.abs().flatten(1).sum(dim=1)

    negative = mode == "pertinent-negative"
    best = x0.clone()
    best_l1 = torch.full((len(x0),), float("inf"), device=dev)
    weight = torch.full((len(x0),), float(c), device=dev)
    todo = torch.arange(len(x0), device=dev)
    with evaluating(net, freeze=True), evaluating(ae or nn.Identity(), freeze=True):
        # The rounds: proto mode draws its change with the autoencoder's decoder; a
        # pertinent negative first draws its ink so, then, for the digits not reached,
        # searches the pixels (with CEM's autoencoder term).
        drawn_rounds = max(1, rounds) if mode == "proto" or (negative and ae is not None) else 0
        plan = [True] * drawn_rounds + [False] * (max(1, rounds) if mode != "proto" else 0)
        for k, drawn in enumerate(plan):
            if k == drawn_rounds:  # from drawn to pixels: the weights start again
                weight[todo] = float(c)
            x_start, goal, w = x0[todo], target[todo], weight[todo]
            if drawn:
                # the change is made in the autoencoder's code: decode(z) - decode(z0),
                # strokes the decoder can draw, not pixel speckle only this model reads
                with torch.no_grad():
                    z0 = ae.encode(x_start)
                    drawn0 = ae.decode(z0)
                free = z0.clone()
            else:
                free = torch.zeros_like(x_start)
            free.requires_grad_(True)
            optimizer = torch.optim.Adam([free], lr=lr * (10 if drawn else 1))
            for _ in range(steps):
                if drawn and negative:  # only the ink the decoder adds
                    added = _passing(ae.decode(free) - drawn0, 0, None)
                    x = x_start + added * (1 - x_start)
                elif drawn:
                    x = (x_start + ae.decode(free) - drawn0).clamp(0, 1)
                else:
                    x = changed(free, x_start)
                logits = net(x)
                with torch.no_grad():  # this iterate, if the model says the goal by kappa
                    reached = _hinge(logits, goal, kappa, away) == 0
                    better = reached & (size(x, x_start) < best_l1[todo])
                    best[todo[better]] = x[better]
                    best_l1[todo[better]] = size(x, x_start)[better]
                loss = w * _hinge(logits, goal, kappa, away)
                if mode == "pertinent-positive":  # as little ink kept as will do
                    loss = loss + beta * x.flatten(1).sum(dim=1) + x.pow(2).flatten(1).sum(dim=1)
                else:
                    loss = loss + (x - x_start).pow(2).flatten(1).sum(dim=1)
                if drawn:  # no proximal step on a code: the L1 term as a loss
                    loss = loss + beta * (x - x_start).abs().flatten(1).sum(dim=1)
                if mode == "proto":
                    loss = loss + theta * (free - proto[todo]).pow(2).sum(dim=1)
                if negative and not drawn and ae is not None and gamma:
                    # CEM's autoencoder term: the ink added should leave a digit it knows
                    loss = loss + gamma * (x - ae(x)).pow(2).flatten(1).sum(dim=1)
                optimizer.zero_grad(set_to_none=True)
                loss.sum().backward()
                optimizer.step()
                if not drawn and mode in ("plain", "pertinent-negative"):
                    with torch.no_grad():  # the L1 term's proximal step: shrink towards 0
                        free.copy_(free.sign() * (free.abs() - lr * beta).clamp(min=0))
            todo = todo[~torch.isfinite(best_l1[todo])]
            if not len(todo):
                break
            weight[todo] *= 10  # not reached yet: weigh the prediction more
    return _result(net, ae, x0, best, target, logits0, away, mode, start)


def _passing(x: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    """x clamped to [low, high] going forward, but the gradient passed as if it were not
    (a straight-through clamp): a pixel at the bound still learns which way to go, where
    a plain clamp would give it no gradient and hold it there for good."""
    return x + (x.clamp(low, high) - x).detach()


def _reached(logits: torch.Tensor, goal: torch.Tensor, away: bool) -> torch.Tensor:
    """(N,) bool: the model says `goal` (away: says anything but `goal`)."""
    said = logits.argmax(dim=1)
    return said != goal if away else said == goal


@torch.no_grad()
def _result(net, ae, x0, best, target, logits0, away, mode, start) -> Counterfactuals:
    """The kept counterfactuals (an image never changed keeps the original) and their
    numbers, on the CPU; logits0: the model's on the originals."""
    logits = net(best)
    probabilities = F.softmax(logits, dim=1)
    prediction = logits.argmax(dim=1)
    valid = _reached(logits, target, away)
    if mode == "pertinent-negative" and away:
        target = prediction.where(valid, target)  # what it became
    change = best - x0
    plausibility = None
    if ae is not None:
        plausibility = (best - ae(best)).pow(2).flatten(1).mean(dim=1).cpu()
    return Counterfactuals(
        images=best.cpu(),
        original=x0.cpu(),
        target=target.cpu(),
        before=logits0.argmax(dim=1).cpu(),
        prediction=prediction.cpu(),
        valid=valid.cpu(),
        probability=probabilities.gather(1, target[:, None]).squeeze(1).cpu(),
        probabilities_before=F.softmax(logits0, dim=1).cpu(),
        probabilities=probabilities.cpu(),
        l1=change.abs().flatten(1).sum(dim=1).cpu(),
        l0=(change.abs() > 1e-3).flatten(1).sum(dim=1).cpu(),
        plausibility=plausibility,
        seconds=time.perf_counter() - start,
        mode=mode,
    )
