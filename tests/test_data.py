import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from amc.data import load_cifar10, load_dataset, load_digits, load_imagefolder, random_crop_flip
from amc.errors import AmcError


def _disjoint(a: torch.Tensor, b: torch.Tensor) -> bool:
    rows_a = {bytes(x.numpy().tobytes()) for x in a}
    return not any(bytes(x.numpy().tobytes()) in rows_a for x in b)


def test_synthetic_splits_have_claimed_sizes_and_are_disjoint(synthetic):
    assert (len(synthetic.train), len(synthetic.val), len(synthetic.test)) == (96, 32, 32)
    assert _disjoint(synthetic.train.images, synthetic.val.images)
    assert _disjoint(synthetic.train.images, synthetic.test.images)
    assert synthetic.input_shape == (3, 16, 16)


def test_digits_splits_cover_the_data_set_once():
    data = load_digits()
    assert len(data.train) + len(data.val) + len(data.test) == 1797
    assert (len(data.val), len(data.test)) == (200, 360)
    assert data.input_shape == (1, 8, 8)
    assert data.train.images.dtype == torch.uint8


def test_val_split_is_seeded():
    a, b, c = load_digits(seed=0), load_digits(seed=0), load_digits(seed=1)
    assert torch.equal(a.val.images, b.val.images)
    assert not torch.equal(a.val.images, c.val.images)


def test_batches_are_normalized_and_complete(synthetic):
    loader = synthetic.batches("val", 10)
    batches = list(loader)
    assert len(batches) == len(loader) == 4
    assert sum(len(y) for _, y in batches) == 32
    x = torch.cat([b[0] for b in batches])
    raw = synthetic.val.images.float() / 255
    mean, std = torch.tensor(synthetic.mean).view(1, -1, 1, 1), torch.tensor(synthetic.std).view(1, -1, 1, 1)
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, (raw - mean) / std)  # the data set's own statistics, not /255


def test_an_imagefolder_is_normalized_by_its_training_split(tmp_path):
    _write_imagefolder(tmp_path / "tree", per_class=4)
    data = load_imagefolder(tmp_path / "tree")
    x = torch.cat([images for images, _ in data.batches("train", 64)])
    assert x.mean(dim=(0, 2, 3)).abs().max() < 0.05  # the training split's mean and std were the ones used
    assert (x.std(dim=(0, 2, 3)) - 1).abs().max() < 0.05


def test_crop_flip_keeps_shape_and_is_seeded():
    images = torch.randint(0, 255, (8, 3, 32, 32), dtype=torch.uint8)
    a = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    b = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert a.shape == images.shape and torch.equal(a, b)
    assert not torch.equal(a, images)


def _write_imagefolder(root, classes=10, per_class=3, size=32):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")


def test_cifar10_from_imagefolder_tar_gz_is_extracted_once(tmp_path):
    _write_imagefolder(tmp_path / "tree")
    archive = tmp_path / "tiny.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "tree" / "train", arcname="train")
        tar.add(tmp_path / "tree" / "test", arcname="test")
    data = load_cifar10(archive, val_size=5)
    assert (len(data.train), len(data.val), len(data.test)) == (25, 5, 30)
    assert data.input_shape == (3, 32, 32)
    again = load_cifar10(archive, val_size=5)
    assert torch.equal(again.train.images, data.train.images)


def test_cifar10_from_imagefolder_tree(tmp_path):
    _write_imagefolder(tmp_path)
    assert len(load_cifar10(tmp_path, val_size=3).train) == 27


def test_a_prefix_of_the_imagefolder_test_split_sees_every_class(tmp_path):
    """Folders list images class by class; `limit` (report_samples) takes the first N of the test split."""
    _write_imagefolder(tmp_path, per_class=10)
    data = load_cifar10(tmp_path, val_size=3)
    first = torch.cat([y for _, y in data.batches("test", 25, limit=25)])
    assert len(first) == 25 and len(first.unique()) >= 7  # class order would give 3 classes
    assert sorted(data.test.labels.tolist()) == [c for c in range(10) for _ in range(10)]  # every image, once
    assert torch.equal(load_cifar10(tmp_path, val_size=3).test.images, data.test.images)  # the same order each time


def test_tar_gz_that_is_not_imagefolder_is_refused(tmp_path):
    (tmp_path / "junk.txt").write_text("hello")
    archive = tmp_path / "junk.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "junk.txt", arcname="junk.txt")
    with pytest.raises(AmcError, match="not an ImageFolder"):
        load_cifar10(archive)


def test_missing_data_dir_is_refused(tmp_path):
    with pytest.raises(AmcError, match="not found"):
        load_dataset("cifar10", tmp_path / "nowhere")
    with pytest.raises(AmcError, match="unknown data set"):
        load_dataset("mnist")
