"""The model series: simple networks on MNIST, from softmax regression to a CNN.

The article mnistlens answers ('Image Classification in 10 Minutes with MNIST Dataset')
works through a series of simple networks; this module names that series, in order,
each member being one architecture of the registry, its constructor arguments and its
training recipe (a `TrainConfig`), so that `compare.py` can set them side by side:

    linear          softmax regression (SGD from zeros on raw pixels: see LINEAR_RECIPE)
    mlp-32 .. -512  one hidden layer of 32, 128, 256, 512 units        (width)
    mlp-256x2, x3   two and three hidden layers of 256                  (depth)
    mlp             the shipped 512-256 MLP                             (depth, taper)
    mlp-256-noreg   mlp-256 without dropout and augmentation    (what regularization buys)
    cnn-1           one conv stage (16 3x3 filters), fc 128: the article's network (28)
    lenet           LeNet-style: two stages of 5x5 conv (6, 16), no batch norm, fc 120
    lenet-noreg     lenet without dropout and augmentation      (what regularization buys)
    cnn             the shipped three-stage CNN (32, 64, 128)

Every CNN uses the shipped recipe (AdamW, one-cycle, peak 3e-3, batch 128,
shift/rotate/scale augmentation, seed 0), every MLP the same but with SGD (momentum 0.9,
peak 0.1) on raw pixels, whose first-layer pictures stay off the empty border (issue
13; the same accuracy), so that within each family only the architecture changes; epochs
are chosen to fit the whole series in under ten minutes on a quiet 2-core CPU (see
`checkpoints/README.md` for the measured times). Depth is studied at width 256, not
512, to keep each file near 1 MB (a 512x3 MLP would be 3.7 MB of git history).

Three members are the shipped checkpoints themselves (`shipped=`): their recorded
config is this recipe, so the series refers to them rather than training copies.

    >>> from mnistlens import series
    >>> series.list_series()[:3]
    ['linear', 'mlp-32', 'mlp-128']
    >>> paths = series.train_series()  # trains what is missing into checkpoints/series/
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from mnistlens.device import Device, resolve_device
from mnistlens.errors import MnistlensError
from mnistlens.loading.checkpoint import load_checkpoint, save_checkpoint
from mnistlens.paths import checkpoint_dir
from mnistlens.train import TrainConfig, train


@dataclass(frozen=True)
class Member:
    """One model of the series: a name, what it shows, and the recipe that makes it."""

    name: str
    question: str  # what comparing this member with its neighbours shows
    config: TrainConfig  # architecture, constructor arguments and training recipe
    shipped: str | None = None  # a shipped checkpoint made with exactly this config


# The softmax-regression recipe, chosen so that its templates look like digits: SGD
# moves a weight only as far as its gradient, zero init leaves never-inked pixels at
# exactly zero, and raw pixels (no normalization) mean a blank pixel has zero input and
# so zero gradient. Measured: 92.29% test accuracy, 14% of the template energy on the
# 4-pixel border, template / class-contrast correlation 0.69 (Adam on normalized
# pixels: 92.58%, 50%, 0.28).
LINEAR_RECIPE = dict(
    arch="linear",
    arch_kwargs={"normalize": False},
    epochs=10,
    batch_size=128,
    lr=1.0,
    weight_decay=1e-3,
    augment=False,
    optimizer="sgd",
    zero_init=True,
)
# The MLP recipe, for the same reason: Adam gives a first-layer weight that
# rarely meets ink (the border, reached only by augmentation) as big a step as any
# other, so 28% of a unit's picture sat on the empty 4-pixel border (49% at random
# init). SGD with momentum on raw pixels moves such weights by their small gradients.
# Measured on mlp-256, 15 epochs (accuracy / border energy): AdamW normalized 98.70% /
# 28%; AdamW raw 98.69% / 43%; AdamW raw, weight decay 0.1: 98.70% / 41%; SGD
# normalized 98.71% / 19%; SGD raw 98.72% / 17%.
MLP_RECIPE = dict(optimizer="sgd", momentum=0.9, lr=0.1)
_NOREG = dict(augment=False)  # with dropout=0 in the arch_kwargs


def _mlp(
    hidden: list[int] | None = None, epochs: int = 15, dropout: float = 0.1, **recipe
) -> TrainConfig:
    """An MLP member: raw pixels and MLP_RECIPE; hidden None is the registry's default."""
    kwargs = {"normalize": False, "dropout": dropout}
    if hidden is not None:
        kwargs = {"hidden": hidden, **kwargs}
    return TrainConfig(arch="mlp", arch_kwargs=kwargs, epochs=epochs, **MLP_RECIPE, **recipe)


def _lenet(dropout: float = 0.25, **recipe) -> TrainConfig:
    kwargs = {"channels": [6, 16], "kernel_size": 5, "batch_norm": False, "hidden": 120}
    return TrainConfig(arch="cnn", arch_kwargs={**kwargs, "dropout": dropout}, epochs=10, **recipe)


def _members() -> list[Member]:
    """The series, in order; built fresh on each call so nobody edits the shared recipe."""
    return [
        Member(
            "linear",
            "softmax regression: one template per digit",
            TrainConfig(**LINEAR_RECIPE),
            "linear.pt",
        ),
        Member("mlp-32", "width: one hidden layer of 32", _mlp([32])),
        Member("mlp-128", "width: one hidden layer of 128", _mlp([128])),
        Member("mlp-256", "width: one hidden layer of 256", _mlp([256])),
        Member("mlp-512", "width: one hidden layer of 512", _mlp([512])),
        Member("mlp-256x2", "depth: two hidden layers of 256", _mlp([256, 256])),
        Member("mlp-256x3", "depth: three hidden layers of 256", _mlp([256, 256, 256])),
        Member(
            "mlp",
            "depth: the shipped 512-256 MLP",
            _mlp(),
            "mlp.pt",
        ),
        Member(
            "mlp-256-noreg",
            "regularization: mlp-256 without dropout or augmentation",
            _mlp([256], dropout=0.0, **_NOREG),
        ),
        Member(
            "cnn-1",
            "convolution: one stage of 16 3x3 filters, fc 128 (the article's has 28)",
            TrainConfig(arch="cnn", arch_kwargs={"channels": [16]}, epochs=10),
        ),
        Member("lenet", "convolution: LeNet-style, two stages of 5x5 (6, 16)", _lenet()),
        Member(
            "lenet-noreg",
            "regularization: lenet without dropout or augmentation",
            _lenet(dropout=0.0, **_NOREG),
        ),
        Member(
            "cnn",
            "convolution: the shipped three-stage CNN (32, 64, 128), batch norm",
            # Three snapshots (epochs 2, 5, 8) for TracIn over training: +3 MB in the file.
            TrainConfig(arch="cnn", arch_kwargs={"channels": [32, 64, 128]}, epochs=8, snapshots=3),
            "cnn.pt",
        ),
    ]


# The questions the series answers, by member: what the report's observations
# (`comparison.report.observations`) compare. Width and depth: members in order;
# regularization: (with, without) pairs.
STUDIES = {
    "width": ("mlp-32", "mlp-128", "mlp-256", "mlp-512"),
    "depth": ("mlp-256", "mlp-256x2", "mlp-256x3"),
    "regularization": (("mlp-256", "mlp-256-noreg"), ("lenet", "lenet-noreg")),
}


def list_series() -> list[str]:
    """Names of the series' members, in series order."""
    return [m.name for m in _members()]


def get_member(name: str) -> Member:
    """The member called `name`; an unknown name lists the known ones."""
    for member in _members():
        if member.name == name:
            return member
    raise MnistlensError(f"no series member {name!r}; members: {', '.join(list_series())}")


def default_dir() -> Path:
    """Where the series' own checkpoints live: `checkpoints/series/`."""
    return checkpoint_dir() / "series"


def member_config(member: Member, overrides: dict | None = None) -> TrainConfig:
    """The member's config with `overrides` (e.g. {"epochs": 1}) applied; unknown keys raise."""
    values = {**dataclasses.asdict(member.config), **(overrides or {})}
    return TrainConfig.from_dict(values)


def checkpoint_path(name: str, out_dir: str | os.PathLike | None = None) -> Path:
    """Where member `name`'s checkpoint is: `out_dir/<name>.pt`, else the shipped file."""
    member = get_member(name)
    own = Path(out_dir or default_dir()) / f"{name}.pt"
    if own.exists() or member.shipped is None:
        return own
    return checkpoint_dir() / member.shipped


def _plain(config: dict) -> dict:
    """A config as stored in a checkpoint: JSON types only (tuples -> lists)."""
    return json.loads(json.dumps(config))


def is_finished(path: str | os.PathLike, config: TrainConfig) -> bool:
    """True if `path` is a loadable checkpoint trained with exactly `config`.

    Comparing the recorded config (and not only the file's existence) means a changed
    recipe, or a quick run with overrides, is retrained rather than silently reused.
    """
    try:
        _, meta = load_checkpoint(path)
        stored = TrainConfig.from_dict(meta["config"])  # old checkpoints: new keys default
    except (MnistlensError, KeyError, TypeError):
        return False
    return _plain(dataclasses.asdict(stored)) == _plain(dataclasses.asdict(config))


def _cli_value(value) -> str:
    """A value as `mnistlens train --arch-kwargs` reads it (true/false, 32,64, and 32, for [32])."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value) + ("," if len(value) == 1 else "")
    return str(value)


_ALWAYS = ("arch", "arch_kwargs", "epochs", "seed")  # written in a fixed place in the command


def train_command(config: TrainConfig, out: str | os.PathLike) -> str:
    """The `mnistlens train` command line equivalent to `config`, writing to `out`.

    Options at their default are left out, as a person would type it. Recorded in each
    series checkpoint as `command`, like the shipped checkpoints' commands.
    """
    words = ["mnistlens", "train", "--arch", config.arch]
    if config.arch_kwargs:
        words += ["--arch-kwargs"] + [f"{k}={_cli_value(v)}" for k, v in config.arch_kwargs.items()]
    words += ["--epochs", str(config.epochs)]
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        value = getattr(config, f.name)
        if f.name in _ALWAYS or value == getattr(defaults, f.name):
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.name == "augment":
            words.append("--no-augment")
        elif isinstance(value, bool):
            words.append(flag)  # e.g. --zero-init
        else:
            words += [flag, str(value)]
    return " ".join(words + ["--seed", str(config.seed), "--out", str(out)])


def series_command(name: str, out_dir: str | os.PathLike, overrides: dict | None = None) -> str:
    """The Python command that retrains member `name` into `out_dir` (works without the CLI)."""
    extra = f", overrides={overrides!r}" if overrides else ""
    return (
        'python -c "from mnistlens import series; '
        f'series.train_member({name!r}, {str(out_dir)!r}{extra})"'
    )


def train_member(
    name: str,
    out_dir: str | os.PathLike | None = None,
    overrides: dict | None = None,
    data_dir: str | None = None,
    progress: bool = True,
    *,
    device: Device = "auto",
) -> tuple[Path, nn.Module, dict]:
    """Train member `name` and write `out_dir/<name>.pt` atomically: -> (path, model, meta).

    The metadata is everything `train()` records plus `series_name`, `series_question`,
    `command` (the equivalent `mnistlens train` line) and `series_command` (this call).
    device: where to train (see `train.train`; not part of the recipe, so a member
    trained on a GPU counts as finished on the CPU and the other way round).
    """
    member = get_member(name)
    config = member_config(member, overrides)
    out_dir = Path(out_dir or default_dir())
    path = out_dir / f"{name}.pt"
    model, meta = train(config, data_dir=data_dir, progress=progress, device=device)
    meta.update(
        series_name=name,
        series_question=member.question,
        command=train_command(config, path),
        series_command=series_command(name, out_dir, overrides),
    )
    path = save_checkpoint(path, model, config.arch, config.arch_kwargs, meta)
    return path, model, meta


def train_series(
    out_dir: str | os.PathLike | None = None,
    only: list[str] | None = None,
    force: bool = False,
    data_dir: str | None = None,
    progress: bool = True,
    overrides: dict | None = None,
    *,
    device: Device = "auto",
) -> list[Path]:
    """Train the members whose checkpoint is missing; -> each selected member's path, in order.

    Resumable: a member whose checkpoint is loadable and was trained with its current
    config is skipped unless `force`; a shipped member (`linear`, `mlp`, `cnn`) is the
    shipped file unless `force` trains it into `out_dir`. One overall progress bar,
    plus each run's per-epoch bars.

    Args:
        out_dir: directory of the series' checkpoints (default `checkpoints/series/`).
        only: member names to consider (default: all), e.g. ["linear", "mlp-32"].
        force: retrain even finished members.
        data_dir: MNIST location (see `data.load_mnist`).
        progress: show progress bars.
        overrides: TrainConfig fields applied to every member, e.g. {"epochs": 1,
            "train_subset": 512} for a quick run.
        device: where to train, "auto" (CUDA if available, else the CPU), "cpu" or
            "cuda[:N]"; checked before any training.

    Example:
        >>> series.train_series(only=["linear", "lenet"])  # ~1 min on 2 cores
    """
    out_dir = Path(out_dir or default_dir())
    names = list_series() if only is None else list(only)
    members = [get_member(n) for n in names]  # unknown names fail before any training
    for member in members:
        member_config(member, overrides)  # bad overrides fail before any training too
    device = resolve_device(device)  # and so does a device this machine lacks
    paths = []
    bar = tqdm(members, desc="series", unit="model", disable=not progress)
    for member in bar:
        bar.set_postfix(model=member.name)
        config = member_config(member, overrides)
        path = out_dir / f"{member.name}.pt" if force else checkpoint_path(member.name, out_dir)
        if force or not is_finished(path, config):
            path, _, meta = train_member(
                member.name, out_dir, overrides, data_dir, progress, device=device
            )
            if progress:
                done = f"{meta['test_accuracy']:.2%} in {meta['train_seconds']} s"
                bar.write(f"{member.name}: {done}")
        paths.append(path)
    return paths


def load_series(
    out_dir: str | os.PathLike | None = None, only: list[str] | None = None
) -> dict[str, tuple[nn.Module, dict]]:
    """name -> (model in eval mode, metadata) for the members, in series order.

    A missing checkpoint raises and names the members still to train and the command.
    """
    names = list_series() if only is None else list(only)
    paths = {n: checkpoint_path(n, out_dir) for n in names}
    missing = [n for n, p in paths.items() if not p.is_file()]
    if missing:
        raise MnistlensError(
            f"series members not trained yet: {', '.join(missing)} (in {out_dir or default_dir()});"
            " train them with series.train_series()"
        )
    return {n: load_checkpoint(p) for n, p in paths.items()}
