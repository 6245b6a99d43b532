"""Training the reference models, reproducibly, on in-memory MNIST.

Recipe (why each piece is there):
- the whole split as one tensor and random index batches: no DataLoader overhead;
- AdamW with a one-cycle learning-rate schedule (Smith & Topin 2017,
  https://arxiv.org/abs/1708.07120): reaches high accuracy in few epochs;
- or plain SGD (`optimizer="sgd"`, same schedule) from zero weights (`zero_init`), for
  softmax regression: Adam rescales every gradient to a full-size step, so the small,
  steady gradients of pixels that carry no information still move their weights, and
  the class templates fill up with background; SGD moves a weight in
  proportion to its gradient, and a pixel that never sees ink keeps its zero weight;
- small random affine distortions (shift, rotation, scale) as augmentation, done on
  the whole batch with `affine_grid`/`grid_sample`: the classic way to push MNIST
  CNNs past 99.5% (Simard et al. 2003);
- every random draw comes from one seed (init, dropout, shuffling, augmentation), and
  the seed, the config and the data checksums are saved in the checkpoint. The global
  torch RNG is seeded inside `torch.random.fork_rng`, so a caller's own random state is
  the same after `train()` as before;
- `device=` ("auto": CUDA when available, else the CPU; "cpu"; "cuda[:N]") says where
  to train. It is not a hyper-parameter: it stays out of the config and is recorded
  beside it (`metadata["device"]`). Initialization, shuffling and augmentation draw
  from CPU generators on every device; the model comes back on the CPU, so its
  checkpoint loads anywhere.
"""

from __future__ import annotations

import dataclasses
import datetime
import importlib.metadata
import math
import platform
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from mnistlens import __version__, models
from mnistlens.data import data_checksums, load_mnist
from mnistlens.device import Device, describe, fork_rng, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.metrics import evaluate

OPTIMIZERS = ("adamw", "sgd")


TRAIN_ACCURACY_IMAGES = 10_000  # the first training images, for the train-test gap


@dataclass
class TrainConfig:
    """Everything that decides a training run; saved in the checkpoint as `config`."""

    arch: str = "cnn"
    arch_kwargs: dict = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 128
    lr: float = 3e-3  # peak learning rate of the one-cycle schedule
    weight_decay: float = 1e-4
    label_smoothing: float = 0.0
    augment: bool = True
    max_shift: float = 2.0  # pixels
    max_rotation: float = 10.0  # degrees
    max_scale: float = 0.1  # relative, e.g. 0.1 -> zoom in [0.9, 1.1]
    seed: int = 0
    train_subset: int | None = None  # use only the first n training images (quick runs)
    optimizer: str = "adamw"  # one of OPTIMIZERS
    momentum: float = 0.0  # SGD only; AdamW's beta1 is cycled by the one-cycle schedule
    zero_init: bool = False  # start from all-zero weights (linear only: see module doc)
    # Adebayo et al.'s data-randomization test needs a model trained on permuted labels:
    # whatever it learns, it is not digits, so faithful maps of it must differ.
    shuffle_labels: bool = False
    # TracIn sums over checkpoints of training (Pruthi et al. 2020): keep this many evenly
    # spaced end-of-epoch snapshots, the last epoch always among them (`snapshot_epochs`)
    snapshots: int = 0
    # an autoencoder of some digits only (counterfactuals' IM1/IM2 compare how well the
    # autoencoders of two classes rebuild an image): train and test on these classes
    classes: list[int] | None = None

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Build from a dict, rejecting unknown keys (so a typo never goes unnoticed)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MnistlensError(f"unknown training options {unknown}; known: {sorted(known)}")
        return cls(**values)

    def validate(self) -> None:
        if self.arch not in models.list_models(task=None):
            raise MnistlensError(
                f"unknown architecture {self.arch!r}; choose one of {models.list_models(None)}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise MnistlensError("epochs and batch_size must be >= 1 and lr > 0")
        if self.train_subset is not None and self.train_subset < self.batch_size:
            raise MnistlensError(
                f"train_subset={self.train_subset} is smaller than batch_size={self.batch_size}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise MnistlensError(
                f"unknown optimizer {self.optimizer!r}; choose one of {list(OPTIMIZERS)}"
            )
        if not 0 <= self.momentum < 1:
            raise MnistlensError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.zero_init and self.arch != "linear":
            # hidden units that start equal get equal gradients and never tell apart
            raise MnistlensError(
                f"zero_init only suits the 'linear' model (no hidden units), not {self.arch!r}"
            )
        if self.classes is not None:
            if models.task_of(self.arch) != "reconstruct":
                raise MnistlensError(
                    f"classes keeps some digits only: for an autoencoder, not {self.arch!r}"
                )
            if not self.classes or not all(
                isinstance(c, int) and 0 <= c <= 9 for c in self.classes
            ):
                raise MnistlensError(f"classes must be digits 0 to 9, got {self.classes!r}")
        if (
            isinstance(self.snapshots, bool)
            or not isinstance(self.snapshots, int)
            or not 0 <= self.snapshots <= self.epochs
        ):
            raise MnistlensError(
                f"snapshots={self.snapshots!r} must be an integer from 0 to epochs={self.epochs}"
            )


def snapshot_epochs(epochs: int, k: int) -> list[int]:
    """The k evenly spaced epochs whose end-of-epoch weights `train` keeps, the last epoch
    always among them: (8, 4) -> [2, 4, 6, 8], (8, 3) -> [2, 5, 8], (5, 0) -> []."""
    return [epochs * i // k for i in range(1, k + 1)]


def snapshot_record(states: dict[int, dict], history: list[dict]) -> dict:
    """The snapshots as a checkpoint stores them (plain lists and tensors, so that
    `torch.load(weights_only=True)` reads them): {"epochs": [e_1, ..., e_K],
    "learning_rates": [...], "state_dicts": [{name: tensor}, ...]}.

    A snapshot's learning rate is the mean over the steps it stands for, those since the
    previous snapshot, not the rate at the instant it was taken: TracIn-CP weighs the
    gradients at a checkpoint by the step size of the training it stands for (Pruthi et
    al. 2020, sec. 3.2), and the one-cycle rate at the end of the last epoch is 4e-6 of
    its peak, which would silence the final weights. (`influence.tracin` multiplies it
    by the epochs since the previous snapshot: each image was visited once per epoch.)
    """
    epochs = sorted(states)
    rates, previous = [], 0
    for epoch in epochs:
        rates.append(sum(h["lr"] for h in history[previous:epoch]) / (epoch - previous))
        previous = epoch
    return {"epochs": epochs, "learning_rates": rates, "state_dicts": [states[e] for e in epochs]}


def random_affine(images: torch.Tensor, config: TrainConfig, gen: torch.Generator) -> torch.Tensor:
    """Randomly shift, rotate and scale each image: (N, 1, 28, 28) -> (N, 1, 28, 28).

    The random draws come from `gen` (a CPU generator), the warp runs on the images'
    device."""
    n = images.shape[0]

    def uniform(bound: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * bound  # (N,) in [-bound, bound]

    angle = uniform(math.radians(config.max_rotation))
    scale = 1 + uniform(config.max_scale)
    shift = torch.stack([uniform(config.max_shift), uniform(config.max_shift)], dim=1)  # (N, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin, shift[:, 0] * 2 / 28], dim=1),
            torch.stack([sin, cos, shift[:, 1] * 2 / 28], dim=1),
        ],
        dim=1,
    ).to(images.device)  # (N, 2, 3), in affine_grid's normalized [-1, 1] coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)


def make_optimizer(
    model: nn.Module, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.OneCycleLR]:
    """The optimizer `config.optimizer` names and its one-cycle schedule (peak `config.lr`)."""
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=config.lr,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        # one-cycle also cycles AdamW's beta1; SGD keeps its fixed momentum, so that
        # momentum=0 stays plain SGD
        cycle_momentum=config.optimizer == "adamw",
    )
    return optimizer, schedule


def fit(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    gen: torch.Generator,
    progress: bool = True,
    snapshots: dict[int, dict] | None = None,
) -> list[dict]:
    """Train `model` in place on (N, 1, 28, 28) images, (N,) labels; -> per-epoch history
    (loss, train accuracy, mean learning rate `lr`).

    Each batch runs where the model is (move the model, and for speed the images, to
    the device first, as `train` does). Shuffling and augmentation draw from `gen`; init
    and dropout from the global RNG, which the caller (`train`) seeds inside a forked
    RNG state. If `snapshots` is a dict, the state_dict at the end of each epoch
    `snapshot_epochs(config.epochs, config.snapshots)` names is copied into it (epoch ->
    {name: tensor}, on the CPU); copying reads the weights and draws no random number,
    so training is bit-identical without it.
    """
    keep = set()
    if snapshots is not None:
        keep = set(snapshot_epochs(config.epochs, config.snapshots))
    device = next(model.parameters()).device
    steps_per_epoch = len(images) // config.batch_size  # drop the ragged last batch
    optimizer, schedule = make_optimizer(model, config, steps_per_epoch)
    # a classifier learns the labels; an autoencoder its (augmented) input itself
    reconstruct = models.task_of(config.arch) == "reconstruct"
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    history = []
    for epoch in range(1, config.epochs + 1):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        loss_sum, correct, seen, lr_sum = 0.0, 0, 0, 0.0
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"{config.arch} epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=True,
        )
        for step in bar:
            idx = order[step * config.batch_size : (step + 1) * config.batch_size]
            idx = idx.to(images.device)
            x, y = images[idx].to(device), labels[idx].to(device)
            if config.augment:
                x = random_affine(x, config, gen)
            logits = model(x)
            loss = F.mse_loss(logits, x) if reconstruct else loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            lr_sum += optimizer.param_groups[0]["lr"]  # the rate this step uses
            optimizer.step()
            schedule.step()

            loss_sum += loss.item() * len(y)
            if not reconstruct:
                correct += int((logits.argmax(dim=1) == y).sum())
            seen += len(y)
            if step % 20 == 0 or step == steps_per_epoch - 1:
                bar.set_postfix(
                    loss=f"{loss_sum / seen:.4f}",
                    acc="-" if reconstruct else f"{correct / seen:.4f}",
                    lr=f"{schedule.get_last_lr()[0]:.2e}",
                )
        history.append(
            {
                "epoch": epoch,
                "loss": loss_sum / seen,
                "train_accuracy": None if reconstruct else correct / seen,
                "lr": lr_sum / steps_per_epoch,
            }
        )
        if epoch in keep:
            snapshots[epoch] = {
                k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
            }
    return history


def _scores(model, config, test_images, test_labels, train_images, train_labels) -> dict:
    """What the checkpoint records of how good the model is. A classifier: test accuracy
    (per digit too) and accuracy on the first training images, unaugmented (with the
    test accuracy, the train-test gap `compare` reports, without a pass over them at
    compare time). An autoencoder: its mean squared error per pixel on the test images."""
    n = TRAIN_ACCURACY_IMAGES
    if models.task_of(config.arch) == "reconstruct":
        with torch.no_grad(), models.evaluating(model):
            chunks = range(0, len(test_images), 1000)
            rebuilt = torch.cat([model(test_images[i : i + 1000]) for i in chunks])
        return {"test_reconstruction_error": float(F.mse_loss(rebuilt, test_images))}
    report = evaluate(model, test_images, test_labels)
    train_report = evaluate(model, train_images[:n], train_labels[:n])  # true labels
    return {
        "test_accuracy": report["accuracy"],
        "train_accuracy": train_report["accuracy"],
        "train_accuracy_images": n,
        "per_digit_accuracy": report["per_digit_accuracy"],
    }


def train(
    config: TrainConfig,
    data_dir: str | None = None,
    progress: bool = True,
    *,
    device: Device = "auto",
) -> tuple[nn.Module, dict]:
    """Train a model as `config` says; -> (model in eval mode, on the CPU, metadata for
    the checkpoint).

    The metadata holds test accuracy (full 10k test set), per-digit accuracy, the
    config, per-epoch history, training seconds, versions, data checksums and the
    device. device: "auto" (CUDA if available, else the CPU), "cpu" or "cuda[:N]";
    the training data is moved there once. Deterministic on CPU for a given config
    (on CUDA, repeatable up to cuDNN's own nondeterminism), and the caller's global RNG
    state is left as it was.
    """
    config.validate()
    device = resolve_device(device)
    all_images, all_labels = load_mnist("train", data_dir)
    images, labels = all_images, all_labels
    if config.train_subset is not None:
        images, labels = images[: config.train_subset], labels[: config.train_subset]
    if config.classes is not None:
        keep = torch.isin(labels, torch.tensor(config.classes))
        images, labels = images[keep], labels[keep]
    if config.shuffle_labels:  # a fixed permutation, seeded apart from the training draws
        shuffle = torch.Generator().manual_seed(config.seed + 1_000_003)
        labels = labels[torch.randperm(len(labels), generator=shuffle)]

    # fork_rng saves the global CPU RNG state and restores it on exit: the seed decides
    # init and dropout without touching the caller's random stream
    # (and on CUDA the device's generator too, which dropout draws from there)
    with fork_rng(device):
        torch.manual_seed(config.seed)  # model init and dropout
        gen = torch.Generator().manual_seed(config.seed)  # shuffling and augmentation
        model = models.build(config.arch, **config.arch_kwargs)  # initialized on the CPU
        if config.zero_init:
            with torch.no_grad():
                for p in model.parameters():
                    p.zero_()
        model.to(device)  # our own model: moved, not copied
        start = time.perf_counter()
        states: dict[int, dict] = {}
        history = fit(
            model, images.to(device), labels.to(device), config, gen, progress, snapshots=states
        )
        train_seconds = time.perf_counter() - start

    test_images, test_labels = load_mnist("test", data_dir)
    if config.classes is not None:
        keep = torch.isin(test_labels, torch.tensor(config.classes))
        test_images, test_labels = test_images[keep], test_labels[keep]
    model.to("cpu")  # a checkpoint of CPU tensors loads on any machine
    metadata = {
        **_scores(model, config, test_images, test_labels, all_images, all_labels),
        "epochs": config.epochs,
        "seed": config.seed,
        "config": dataclasses.asdict(config),
        "history": history,
        "train_seconds": round(train_seconds, 1),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
        "data_checksums": data_checksums(data_dir),
        "versions": {
            "mnistlens": __version__,
            "torch": torch.__version__,
            # The installed distribution's version, read without importing torchvision
            # (slow to import, and training never uses it): "0.29.1", where the module would say
            # "0.29.1+cu130" (the wheel's build tag).
            "torchvision": importlib.metadata.version("torchvision"),
            "python": platform.python_version(),
        },
        "machine": f"{platform.machine()} {platform.system()}, {torch.get_num_threads()} threads",
        "device": describe(device),  # where it trained: metadata, not part of the config
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if states:  # for TracIn; a checkpoint stores them with the metadata
        metadata["snapshots"] = snapshot_record(states, history)
    model.eval()
    return model, metadata
