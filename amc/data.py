"""Data sets by name, each split into train / val / test and held in memory as uint8 tensors.

The validation split is carved out of the training set (seeded) and is what search rewards use;
the test split is only for final reports. Batches are augmented as whole tensors, so a 2-core
machine is not bound by PIL.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from amc.errors import AmcError, library_text

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Split:
    """Images as a uint8 tensor (N, C, H, W) and integer labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> Split:
        return Split(self.images[indices], self.labels[indices])


@dataclass
class DataSplits:
    """A data set's three splits and what a model needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: str = "none"
    """Train-time augmentation: "crop_flip" (CIFAR: pad-4 random crop plus horizontal flip) or "none"."""
    source: str = ""
    options: dict = field(default_factory=dict)
    """Loader options that shaped the images (imagefolder: image_size, channels), replayed on reload."""

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])

    def describe(self) -> dict:
        """Plain data for checkpoints: enough to rebuild inputs, no images."""
        return {
            "name": self.name,
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "mean": list(self.mean),
            "std": list(self.std),
            "sizes": {"train": len(self.train), "val": len(self.val), "test": len(self.test)},
            "source": self.source,
            "options": dict(self.options),
        }

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        train: bool = False,
        generator: torch.Generator | None = None,
        limit: int | None = None,
        channels_last: bool = False,
        shard: tuple[int, int] = (0, 1),
    ) -> BatchLoader:
        """Normalized float batches of one split; `train=True` shuffles and augments. With `shard=(rank,
        world)` each batch is this rank's share of a global batch of `batch_size` (distributed training)."""
        data = getattr(self, split)
        if limit is not None and limit < len(data):
            data = data.subset(torch.arange(limit))
        return BatchLoader(
            data,
            batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=train,
            augment=self.augment if train else "none",
            generator=generator,
            channels_last=channels_last,
            shard=shard,
        )


@dataclass
class BatchLoader:
    """Iterates over a `Split` in batches: normalizes, and optionally shuffles and augments."""

    split: Split
    batch_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shuffle: bool = False
    augment: str = "none"
    generator: torch.Generator | None = None
    channels_last: bool = False
    shard: tuple[int, int] = (0, 1)
    """(rank, world size): yield only this rank's share of every global batch."""
    _mean: torch.Tensor = field(init=False, repr=False)
    _std: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._mean = torch.tensor(self.mean).view(1, -1, 1, 1) * 255.0
        self._std = torch.tensor(self.std).view(1, -1, 1, 1) * 255.0

    def __len__(self) -> int:
        full, rest = divmod(len(self.split), self.batch_size)
        return full + (rest >= self.shard[1])  # a last batch too small to share among the ranks is dropped

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.split)
        rank, world = self.shard
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if len(idx) < world:
                break
            images = self.split.images[idx]
            if self.augment == "crop_flip":  # drawn for the whole global batch, so every rank's generator agrees
                images = random_crop_flip(images, padding=4, generator=self.generator)
            if world > 1:
                images, idx = images[rank::world], idx[rank::world]
            x = (images.float() - self._mean) / self._std
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.split.labels[idx]


def random_crop_flip(images: torch.Tensor, padding: int, generator: torch.Generator | None) -> torch.Tensor:
    """Per-image random crop after zero padding, and random horizontal flip, on a whole batch."""
    n, c, h, w = images.shape
    padded = F.pad(images, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)[None, :]
    cols = dx[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(n)[:, None, None, None]
    chan_idx = torch.arange(c)[None, :, None, None]
    return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]


# ----------------------------------------------------------------------------- sources


def cache_dir() -> Path:
    """Where extracted archives and decoded tensors live: `$AMC_CACHE` or `~/.cache/amc`."""
    return Path(os.environ.get("AMC_CACHE", Path.home() / ".cache" / "amc"))


def data_path(data_dir: str | Path) -> Path:
    """`--data-dir` as a path; a symlink that loops or leads nowhere is one line saying so."""
    path = Path(data_dir).expanduser()
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as exc:  # a loop (RuntimeError before Python 3.13), or a dangling link
            kind = (
                "a symlink loop" if "loop" in str(exc).lower() else f"a symlink to {os.readlink(path)}, which is gone"
            )
            raise AmcError(f"data dir {path} is {kind}; point --data-dir at the folder or .tar.gz itself") from None
    return path


def _extract_archive(archive: Path) -> Path:
    """Extract an ImageFolder `.tar.gz` once into the cache; returns the folder holding train/ and test/."""
    digest = hashlib.sha256(f"{archive.resolve()}:{archive.stat().st_size}".encode()).hexdigest()[:12]
    target = cache_dir() / f"{archive.name.split('.')[0]}-{digest}"
    done = target / ".extracted"
    if not tarfile.is_tarfile(archive):
        raise AmcError(f"{archive} is a file but not a tar archive; pass an ImageFolder folder (train/ and test/ "
                       "inside) or its .tar.gz")  # fmt: skip
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(target, filter="data")
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise AmcError(f"cannot extract {archive}: {library_text(exc)}; pass an ImageFolder .tar.gz") from exc
        done.touch()
    return _find_imagefolder_root(target, archive)


def _find_imagefolder_root(folder: Path, origin: Path) -> Path:
    for candidate in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        if (candidate / "train").is_dir() and (candidate / "test").is_dir():
            return candidate
    raise AmcError(f"{origin} is not an ImageFolder tree: expected train/<class>/ and test/<class>/ folders")


GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}


def _decode_imagefolder(folder: Path, image_size: int | None, channels: int | None) -> tuple[Split, list[str]]:
    """Every image of `folder/<class>/`, as it is unless `image_size` (square resize) or `channels` (1 or 3)
    says otherwise. Left alone, grayscale images stay one channel unless some image in the set is colour."""
    from PIL import Image

    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise AmcError(f"{folder} has no class folders; expected {folder}/<class>/<image>")
    images, labels, sizes = [], [], {}
    for label, name in enumerate(classes):
        for path in sorted((folder / name).iterdir()):
            if path.suffix.lower() not in {".jpg", ".jpeg", ".png", ".bmp", ".webp"}:
                continue
            try:
                with Image.open(path) as img:
                    gray = img.mode in GRAYSCALE_MODES if channels is None else channels == 1
                    img = img.convert("L" if gray else "RGB")
                    if image_size is not None and img.size != (image_size, image_size):
                        img = img.resize((image_size, image_size), Image.BILINEAR)
                    array = np.asarray(img, dtype=np.uint8)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                raise AmcError(f"image {path} cannot be decoded ({library_text(exc)}); remove or replace it") from None
            sizes.setdefault(array.shape[:2], path)
            images.append(array if array.ndim == 3 else array[:, :, None])
            labels.append(label)
    if not images:
        raise AmcError(f"{folder} holds no images")
    if len(sizes) > 1:
        (a, first), (b, second) = list(sizes.items())[:2]
        raise AmcError(f"images differ in size ({first.name} is {a[1]}x{a[0]}, {second.name} is {b[1]}x{b[0]}); "
                       "pass --image-size N to resize them all to NxN")  # fmt: skip
    if len({a.shape[2] for a in images}) > 1:  # some grayscale, some colour: colour wins
        images = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in images]
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return Split(stacked, torch.tensor(labels, dtype=torch.long)), classes


def _load_imagefolder_tree(root: Path, image_size: int | None, channels: int | None = None) -> tuple[Split, Split, int]:
    """Decode train/ and test/ once (cached next to the cache copy). The test split comes back in a fixed
    shuffled order: folders list it class by class, and a report on its first N images (`report_samples`)
    must see every class."""
    train, test, num_classes = _decoded_imagefolder_tree(root, image_size, channels)
    return train, test.subset(torch.randperm(len(test), generator=torch.Generator().manual_seed(0))), num_classes


def _decoded_imagefolder_tree(root: Path, image_size: int | None, channels: int | None) -> tuple[Split, Split, int]:
    cache_key = hashlib.sha256(f"{root.resolve()}:{image_size}:{channels}".encode()).hexdigest()[:12]
    cached = cache_dir() / f"decoded-{cache_key}.pt"
    if cached.exists():
        blob = torch.load(cached, weights_only=True)
        return Split(*blob["train"]), Split(*blob["test"]), blob["num_classes"]
    train, classes = _decode_imagefolder(root / "train", image_size, channels)
    test_folder = root / "test" if (root / "test").is_dir() else root / "val"
    test, test_classes = _decode_imagefolder(test_folder, image_size, channels)
    if classes != test_classes:
        raise AmcError(f"{root}: train/ and {test_folder.name}/ have different class folders")
    if train.images.shape[1:] != test.images.shape[1:]:
        shapes = f"{tuple(train.images.shape[1:])} and {tuple(test.images.shape[1:])} (C, H, W)"
        raise AmcError(f"{root}: train/ and {test_folder.name}/ images differ, {shapes}; pass --image-size, --channels")
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_suffix(".tmp")
    torch.save(
        {"train": (train.images, train.labels), "test": (test.images, test.labels), "num_classes": len(classes)},
        tmp,
    )
    tmp.replace(cached)
    return train, test, len(classes)


def _load_torchvision_cifar10(root: Path, download: bool) -> tuple[Split, Split]:
    from torchvision.datasets import CIFAR10

    def to_split(ds) -> Split:
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return Split(images, torch.tensor(ds.targets, dtype=torch.long))

    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except RuntimeError as exc:
        raise AmcError(
            f"no CIFAR-10 found in {root}: {library_text(exc)}; pass --download or an ImageFolder path"
        ) from exc
    return to_split(train), to_split(test)


def _hold_out(train: Split, val_size: int, seed: int) -> tuple[Split, Split]:
    if not 0 < val_size < len(train):
        raise AmcError(f"val_size={val_size} must be between 1 and {len(train) - 1}")
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    return train.subset(order[val_size:]), train.subset(order[:val_size])


# ----------------------------------------------------------------------------- data sets


def load_cifar10(
    data_dir: str | Path | None, download: bool = False, val_size: int = 5000, seed: int = 0
) -> DataSplits:
    """CIFAR-10 from a torchvision folder, an ImageFolder tree or an ImageFolder `.tar.gz`."""
    if data_dir is None:
        data_dir = cache_dir() / "cifar10"
    path = data_path(data_dir)
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        train, test, num_classes = _load_imagefolder_tree(_extract_archive(path), image_size=32, channels=3)
    elif path.is_dir() and (path / "train").is_dir():
        train, test, num_classes = _load_imagefolder_tree(path, image_size=32, channels=3)
    elif download or (path / "cifar-10-batches-py").is_dir():
        train, test = _load_torchvision_cifar10(path, download)
        num_classes = 10
    else:
        raise AmcError(
            f"CIFAR-10 data dir {path} not found or not recognised; pass an ImageFolder folder or .tar.gz, "
            "or add --download"
        )
    if num_classes != 10:
        raise AmcError(f"{path} has {num_classes} classes, CIFAR-10 has 10")
    train, val = _hold_out(train, val_size, seed)
    return DataSplits("cifar10", train, val, test, 10, CIFAR10_MEAN, CIFAR10_STD, "crop_flip", str(path))


def load_imagefolder(
    data_dir: str | Path,
    image_size: int | None = None,
    channels: int | None = None,
    val_fraction: float = 0.1,
    seed: int = 0,
    augment: str = "crop_flip",
) -> DataSplits:
    """Any ImageFolder data set (folder or `.tar.gz`) with train/ and test/ (or val/) class folders. Images
    keep their own size and channels unless `image_size` (resize to a square) or `channels` (1 or 3) is given."""
    if image_size is not None and image_size < 1:
        raise AmcError(f"image_size is {image_size}; pass a positive pixel count")
    if channels not in (None, 1, 3):
        raise AmcError(f"channels is {channels}; use 1 (grayscale) or 3 (RGB)")
    if data_dir is None:
        raise AmcError("the imagefolder data set needs --data-dir pointing at a folder with train/ and test/")
    path = data_path(data_dir)
    if path.is_file():
        root = _extract_archive(path)
    elif path.is_dir():
        root = path
        if not (root / "train").is_dir():
            raise AmcError(f"{path} is not an ImageFolder tree: expected train/<class>/ and test/<class>/")
    else:
        raise AmcError(f"data dir {path} does not exist; pass an ImageFolder folder or .tar.gz")
    train, test, num_classes = _load_imagefolder_tree(root, image_size, channels)
    train, val = _hold_out(train, max(1, int(len(train) * val_fraction)), seed)
    mean = tuple((train.images.float() / 255).mean(dim=(0, 2, 3)).tolist())
    std = tuple((train.images.float() / 255).std(dim=(0, 2, 3)).clamp_min(1e-3).tolist())
    options = {"image_size": image_size, "channels": channels}
    return DataSplits("imagefolder", train, val, test, num_classes, mean, std, augment, str(path), options)


def load_digits(val_size: int = 200, test_size: int = 360, seed: int = 0) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images): the offline default."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.from_numpy((bunch.images * (255.0 / 16.0)).round().astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    everything = Split(images, labels)
    test = everything.subset(order[:test_size])
    train, val = _hold_out(everything.subset(order[test_size:]), val_size, seed + 1)
    return DataSplits("digits", train, val, test, 10, (0.3,), (0.4,), "none", "sklearn.datasets.load_digits")


def load_synthetic(
    num_classes: int = 4, image_size: int = 16, channels: int = 3, per_class: int = 40, seed: int = 0
) -> DataSplits:
    """Tiny generated images for tests: each class is a noisy copy of its own random template."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, channels, image_size, image_size, generator=g) * 255
    total = num_classes * per_class
    labels = torch.arange(total) % num_classes
    noise = torch.randn(total, channels, image_size, image_size, generator=g) * 40
    images = (templates[labels] + noise).clamp(0, 255).to(torch.uint8)
    everything = Split(images, labels)
    n_test = total // 5
    test = everything.subset(torch.arange(n_test))
    train, val = _hold_out(everything.subset(torch.arange(n_test, total)), n_test, seed)
    return DataSplits("synthetic", train, val, test, num_classes, (0.5,) * channels, (0.25,) * channels, "none")


DATASETS = ("cifar10", "digits", "imagefolder", "synthetic")


def load_dataset(
    name: str, data_dir: str | Path | None = None, *, download: bool = False, seed: int = 0, **kwargs
) -> DataSplits:
    """Load a data set by name: one of `DATASETS`."""
    if name == "cifar10":
        return load_cifar10(data_dir, download=download, seed=seed, **kwargs)
    if name == "digits":
        return load_digits(seed=seed, **kwargs)
    if name == "imagefolder":
        return load_imagefolder(data_dir, seed=seed, **kwargs)
    if name == "synthetic":
        return load_synthetic(seed=seed, **kwargs)
    raise AmcError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
