"""MNIST as in-memory tensors, in the one input convention every model here uses.

Input convention (used by models, attributions, plots and the app alike):
    images are float32 tensors of shape (N, 1, 28, 28) with pixel values in [0, 1],
    0 = black background, 1 = full ink, exactly the original MNIST bytes / 255.
    Normalization (mean 0.1307, std 0.3081) happens *inside* each model
    (``models.Normalize``), so attribution baselines such as "a black image" are
    simply zeros and a user's own image needs no preprocessing beyond [0, 1].

Where the files live, in order of precedence:
    1. the ``data_dir`` argument (``--data-dir`` on the command line),
    2. the ``MNISTLENS_DATA`` environment variable,
    3. a user cache directory (``$XDG_CACHE_HOME/mnistlens`` or ``~/.cache/mnistlens``),
       where torchvision downloads the files when the machine is online.
The directory is a torchvision root: it holds ``MNIST/raw/<the four files>`` (or their
``.gz`` originals, read as they are).

Why not a DataLoader: iterating a torchvision dataset item by item converts every
image to PIL and back, which is far slower than the model on 2 CPU cores. The whole
split fits in memory (60,000 x 784 bytes = 47 MB), so we hold it as one tensor.

Why not torchvision's reader either: the IDX format is a 16-byte header and the raw
bytes, so `read_idx` reads it here (the same tensors as ``torchvision.datasets.MNIST``,
checked by a test), while importing torchvision takes as long as the rest of
`mnistlens explain`. torchvision is imported only to download missing files.

A user's own picture of a digit is made MNIST-style by `mnistlens.pictures`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path

import torch

from mnistlens.errors import MnistlensError
from mnistlens.paths import cache_dir

SPLITS = ("train", "test")
MEAN, STD = 0.1307, 0.3081  # pixel statistics of the training split, on [0, 1]
ENV_VAR = "MNISTLENS_DATA"
OFFLINE_ENV_VAR = "MNISTLENS_OFFLINE"  # set to 1 to never try a download
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data directory: the argument, else $MNISTLENS_DATA, else the user cache."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return cache_dir()


def raw_file(root: Path, name: str) -> Path | None:
    """`root`/MNIST/raw/`name`, else its .gz original, else None if neither is there."""
    raw = root / "MNIST" / "raw"
    for path in (raw / name, raw / f"{name}.gz"):
        if path.is_file():
            return path
    return None


def _missing_files(root: Path) -> list[str]:
    return [name for name in RAW_FILES if raw_file(root, name) is None]


def _ensure_files(root: Path, download: bool) -> None:
    """Download the files into `root` if missing (and allowed), else raise a clear error."""
    if _missing_files(root):
        problem = f"download is switched off (${OFFLINE_ENV_VAR} or download=False)"
        if download:
            try:
                # Imported here, the only place that needs it: torchvision is slow to import.
                from torchvision.datasets import MNIST

                # torchvision prints progress to stdout; keep our CLI output clean.
                with contextlib.redirect_stdout(io.StringIO()):
                    MNIST(root=str(root), train=True, download=True)
                problem = ""
            except Exception as err:  # noqa: BLE001 - any failure means "not available"
                first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
                problem = f"download failed ({first_line[:120]})"
        missing = _missing_files(root)
        if missing:
            raise MnistlensError(
                f"MNIST files missing in {root / 'MNIST' / 'raw'}: {', '.join(missing)}; "
                f"{problem}. Put the four MNIST files there (or their .gz originals), "
                f"or point --data-dir / ${ENV_VAR} at a directory "
                "holding MNIST/raw/."
            )


# SHA-256 of the four original (uncompressed) files: a file that claims to be the full
# MNIST split (60,000 or 10,000 items) must be exactly the original.
ORIGINAL_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
_IDX_MAGIC = {"images": 0x00000803, "labels": 0x00000801}  # idx3 uint8, idx1 uint8


def verify_raw_file(path: Path) -> bytearray:
    """Refuse a truncated or corrupted MNIST file; -> its (uncompressed) bytes.

    `path` is one of RAW_FILES, or its .gz original (checked after decompression). IDX
    files state their item count in the header, so a truncated file is caught by its
    size; a file with the original count must match the original's SHA-256. (A smaller,
    self-consistent file, e.g. a subset someone wrote on purpose, is read as it is.)
    """
    name = path.name.removesuffix(".gz")
    kind = "images" if "images" in name else "labels"
    fix = (
        "delete it and let torchvision download it again (online), or copy the original "
        f"file back; its SHA-256 is {ORIGINAL_SHA256.get(name, '?')[:16]}..."
    )
    if path.suffix == ".gz":
        try:
            data = bytearray(gzip.decompress(path.read_bytes()))
        except (OSError, EOFError, zlib.error) as err:  # BadGzipFile is an OSError
            raise MnistlensError(
                f"MNIST file {path} is not a readable gzip file ({type(err).__name__}); {fix}"
            ) from None
    else:
        data = bytearray(path.read_bytes())  # writable, so torch.frombuffer can share it
    header = 16 if kind == "images" else 8
    if len(data) < header or int.from_bytes(data[:4], "big") != _IDX_MAGIC[kind]:
        raise MnistlensError(f"MNIST file {path} is not an IDX {kind} file; {fix}")
    rows_cols = (int.from_bytes(data[8:12], "big"), int.from_bytes(data[12:16], "big"))
    if kind == "images" and rows_cols != (28, 28):
        raise MnistlensError(f"MNIST file {path} does not hold 28 x 28 images; {fix}")
    count = int.from_bytes(data[4:8], "big")
    expected = header + count * (28 * 28 if kind == "images" else 1)
    if len(data) != expected:
        raise MnistlensError(
            f"MNIST file {path} is truncated or padded: {len(data):,} bytes, its header "
            f"says {expected:,}; {fix}"
        )
    original = 60_000 if name.startswith("train") else 10_000
    if count == original and hashlib.sha256(data).hexdigest() != ORIGINAL_SHA256[name]:
        raise MnistlensError(f"MNIST file {path} is corrupted (SHA-256 mismatch); {fix}")
    return data


def read_idx(path: Path) -> torch.Tensor:
    """One verified MNIST IDX file (or its .gz) as torchvision reads it: images ->
    (N, 28, 28) uint8, labels -> (N,) uint8 (`verify_raw_file` checked the header)."""
    data = verify_raw_file(path)
    if "images" in path.name:
        count = int.from_bytes(data[4:8], "big")
        return torch.frombuffer(data, dtype=torch.uint8, offset=16).view(count, 28, 28)
    return torch.frombuffer(data, dtype=torch.uint8, offset=8)  # (N,)


@functools.lru_cache(maxsize=4)
def _read_split(split: str, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one split as (N, 28, 28) uint8 images and (N,) int64 labels, cached per process
    (verified by `verify_raw_file` as they are read, once)."""
    prefix = "train" if split == "train" else "t10k"
    paths = [raw_file(root, name) for name in RAW_FILES if name.startswith(prefix)]
    if None in paths:  # callers run _ensure_files first; this guards a file deleted since
        _ensure_files(root, download=False)
    images, labels = (read_idx(path) for path in paths)  # (N, 28, 28), (N,) uint8
    if len(images) != len(labels):
        raise MnistlensError(
            f"MNIST {split} files disagree: {len(images):,} images but {len(labels):,} "
            f"labels in {root / 'MNIST' / 'raw'}; copy the original files back"
        )
    return images, labels.long()


def load_mnist(
    split: str = "test",
    data_dir: str | os.PathLike | None = None,
    download: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole MNIST split into memory, ready to feed the models.

    Args:
        split: "train" (60,000 images) or "test" (10,000 images).
        data_dir: torchvision root holding MNIST/raw/; default: $MNISTLENS_DATA, else
            the user cache directory.
        download: try to download missing files (needs the internet); default: yes,
            unless $MNISTLENS_OFFLINE is set to 1.

    Returns:
        images: (N, 1, 28, 28) float32 in [0, 1], original MNIST order.
        labels: (N,) int64 digits 0-9.

    Example:
        >>> images, labels = load_mnist("test")
        >>> images.shape, labels[:3].tolist()
        (torch.Size([10000, 1, 28, 28]), [7, 2, 1])
    """
    if split not in SPLITS:
        raise MnistlensError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    root = resolve_data_dir(data_dir).resolve()
    if download is None:
        download = os.environ.get(OFFLINE_ENV_VAR, "") not in ("1", "true", "yes")
    _ensure_files(root, download)
    raw_images, labels = _read_split(split, root)
    images = raw_images.unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    return images, labels.clone()


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Validate a batch in the input convention: (N >= 1, 1, 28, 28) finite floating point.

    float64/float16 and non-contiguous batches are accepted and returned as float32
    (the models' dtype); the checks name the problem and the fix."""
    if not isinstance(images, torch.Tensor):
        raise MnistlensError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4 or tuple(images.shape[1:]) != (1, 28, 28):
        hint = " (add a batch axis: images.unsqueeze(0))" if images.dim() == 3 else ""
        raise MnistlensError(
            f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}{hint}"
        )
    if not images.is_floating_point():
        raise MnistlensError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise MnistlensError("images is an empty batch (N = 0); pass at least one image")
    if not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).flatten(1).any(dim=1).nonzero()[0])
        raise MnistlensError(f"images must be finite; image {bad} holds NaN or inf values")
    return images.detach().to(torch.float32)  # the models' dtype; float64 input is fine


def get_test_image(
    index: int, data_dir: str | os.PathLike | None = None
) -> tuple[torch.Tensor, int]:
    """Test image `index` and its label: -> ((1, 28, 28) float32 in [0, 1], int)."""
    images, labels = load_mnist("test", data_dir)
    if not 0 <= index < len(images):
        raise MnistlensError(
            f"test index {index} is out of range; the MNIST test set has indices 0 to "
            f"{len(images) - 1}"
        )
    return images[index], int(labels[index])


def data_checksums(data_dir: str | os.PathLike | None = None) -> dict[str, str]:
    """SHA-256 of each split's pixel and label bytes, as recorded in checkpoints."""
    root = resolve_data_dir(data_dir).resolve()
    _ensure_files(root, download=False)
    return {split: _split_checksum(split, root) for split in SPLITS}


@functools.lru_cache(maxsize=4)
def _split_checksum(split: str, root: Path) -> str:
    """Once per process and split, as `_read_split` reads it (hashing the 47 MB of the
    training split takes 0.1 s, and the explorer's kept results and the detector fits
    both key on it)."""
    images, labels = _read_split(split, root)
    digest = hashlib.sha256(images.numpy().tobytes())
    digest.update(labels.numpy().tobytes())
    return digest.hexdigest()


def gaussian_blur(images: torch.Tensor, kernel_size: int, sigma: float) -> torch.Tensor:
    """A Gaussian blur of a batch, as torchvision's `gaussian_blur` computes it (reflect
    padding, normalized kernel), without importing torchvision (slow to import): the blur baseline
    and feature visualization use it. (N, C, H, W) -> (N, C, H, W); kernel_size odd."""
    if kernel_size < 1 or kernel_size % 2 == 0 or sigma <= 0:
        raise MnistlensError(
            f"blur needs an odd kernel_size >= 1 and sigma > 0, got {kernel_size}, {sigma}"
        )
    half = (kernel_size - 1) / 2
    x = torch.linspace(-half, half, kernel_size, dtype=images.dtype)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(images.shape[1], 1, kernel_size, kernel_size)
    pad = kernel_size // 2
    padded = torch.nn.functional.pad(images, [pad, pad, pad, pad], mode="reflect")
    return torch.nn.functional.conv2d(padded, kernel, groups=images.shape[1])
