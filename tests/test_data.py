"""Data layer: every input format, every bad input, the split, augmentation and the cache."""

from __future__ import annotations

import io
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from triseg.data import CIFAR10_CLASSES, Split, augment, batches, load_cifar10, stratified_split
from triseg.errors import TrisegError

CLASSES = ["cat", "dog", "frog"]


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, per_class: int = 4, classes=CLASSES, test_classes=None) -> Path:
    for split, names in (("train", classes), ("test", test_classes or classes)):
        for c, cls in enumerate(names):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                (d / f"{i:04d}.png").write_bytes(_png(100 * c + i + (0 if split == "train" else 7)))
    return root


def make_tar(tree: Path, dest: Path, mode: str) -> Path:
    with tarfile.open(dest, mode) as tar:
        for split in ("train", "test"):
            if (tree / split).exists():
                tar.add(tree / split, arcname=split)
    return dest


def test_image_folder_tree_and_archives_agree(tmp_path):
    tree = make_tree(tmp_path / "tree")
    from_dir = load_cifar10(tree, val_size=3)
    for name, mode in (("d.tar", "w"), ("d.tar.gz", "w:gz")):
        arch = load_cifar10(make_tar(tree, tmp_path / name, mode), val_size=3)
        assert torch.equal(arch.train.x, from_dir.train.x) and torch.equal(arch.test.y, from_dir.test.y)
    assert from_dir.classes == CLASSES
    assert from_dir.train.x.dtype == torch.uint8 and from_dir.train.x.shape[1:] == (3, 32, 32)
    assert len(from_dir.train) + len(from_dir.val) == 12 and len(from_dir.test) == 12
    pixels = np.array(Image.open(tree / "test" / "cat" / "0000.png")).transpose(2, 0, 1)
    assert torch.equal(from_dir.test.x[0], torch.from_numpy(pixels))


def test_cache_is_written_and_reused(tmp_path):
    tree = make_tree(tmp_path / "tree")
    archive = make_tar(tree, tmp_path / "d.tar", "w")
    first = load_cifar10(archive, val_size=0)
    caches = list(tmp_path.glob(".d.tar.triseg-cache-*.pt"))
    assert len(caches) == 1
    blob = torch.load(caches[0], weights_only=True)
    blob["test_y"] = blob["test_y"] * 0 + 2
    torch.save(blob, caches[0])
    assert torch.all(load_cifar10(archive, val_size=0).test.y == 2), "second load must come from the cache"
    assert len(first.test) == 12


def test_splits_one_folder_down_read_the_same(tmp_path):
    plain = load_cifar10(make_tree(tmp_path / "plain"), val_size=0)
    make_tree(tmp_path / "outer" / "cifar10")
    archive = tmp_path / "wrapped.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "outer" / "cifar10", arcname="cifar10")
    for wrapped in (load_cifar10(tmp_path / "outer", val_size=0), load_cifar10(archive, val_size=0)):
        assert wrapped.classes == plain.classes
        assert torch.equal(wrapped.train.x, plain.train.x) and torch.equal(wrapped.test.y, plain.test.y)


def test_other_classes_than_the_models_are_refused_before_the_cache_is_written(tmp_path):
    tree = make_tree(tmp_path / "tree")
    classes = load_cifar10(tree, val_size=0).classes
    archive = make_tar(tree, tmp_path / "d.tar", "w")
    expected = rf"has {len(classes)} classes \({', '.join(classes)}\); the models predict 10 \(airplane, "
    with pytest.raises(TrisegError, match=expected):
        load_cifar10(archive, val_size=0, expect_classes=CIFAR10_CLASSES)
    assert not list(tmp_path.glob(".d.tar.triseg-cache-*.pt"))
    renamed = [f"n{i}" for i in range(len(classes))]
    warning = (rf"classes are {', '.join(classes)}, not n0, n1, .*: its i-th class is scored as the models' i-th "
               rf"\({classes[0]} as n0, {classes[1]} as n1, ...\)")
    with pytest.warns(UserWarning, match=warning):
        assert load_cifar10(archive, val_size=0, expect_classes=renamed).classes == classes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_cifar10(archive, val_size=0, expect_classes=classes).classes == classes


def test_cifar_pickle_layout(tmp_path):
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    rng = np.random.default_rng(0)
    for name, n in [*[(f"data_batch_{i}", 6) for i in range(1, 6)], ("test_batch", 5)]:
        entry = {"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, n))}
        (root / name).write_bytes(pickle.dumps(entry))
    (root / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    data = load_cifar10(tmp_path, val_size=5)
    assert len(data.train) == 25 and len(data.val) == 5 and len(data.test) == 5
    assert data.classes[3] == "c3"


@pytest.mark.parametrize("case", ["missing", "no_test", "classes", "unreadable", "not_archive", "tiff_only",
                                  "two_trees", "two_trees_archived", "two_down"])
def test_bad_inputs_give_one_line_errors(tmp_path, case):
    if case == "missing":
        target, expect = tmp_path / "nope", "does not exist"
    elif case.startswith("two_trees"):
        make_tree(tmp_path / "both" / "a")
        make_tree(tmp_path / "both" / "b")
        several = "has train/ or test/ folders in several places (a/, b/): "
        target, expect = tmp_path / "both", several + "pass one of them as --data-dir"
        if case == "two_trees_archived":
            with tarfile.open(tmp_path / "both.tar", "w") as tar:
                for name in ("a", "b"):
                    tar.add(tmp_path / "both" / name, arcname=name)
            target, expect = tmp_path / "both.tar", several + "keep one of them in the archive"
    elif case == "two_down":
        make_tree(tmp_path / "deep" / "x" / "y")
        target, expect = tmp_path / "deep", "has no train/ folder (expected train/<class>/*, test/<class>/*, at the top"
    elif case == "tiff_only":
        tree = make_tree(tmp_path / "tree")
        for png in tree.glob("*/*/*.png"):
            png.rename(png.with_suffix(".tiff"))
        target, expect = tree, "no images found under train/ in " + str(tree) + " (image files end in .bmp, .jpeg"
    elif case == "no_test":
        tree = make_tree(tmp_path / "tree")
        (tmp_path / "only").mkdir()
        (tree / "train").rename(tmp_path / "only" / "train")
        target, expect = make_tar(tmp_path / "only", tmp_path / "x.tar.gz", "w:gz"), "no test/ folder"
    elif case == "classes":
        target, expect = make_tree(tmp_path / "tree", test_classes=["cat", "dog", "emu"]), "class folders differ"
    elif case == "unreadable":
        tree = make_tree(tmp_path / "tree")
        (tree / "train" / "dog" / "0001.png").write_bytes(b"not an image")
        target, expect = tree, "0001.png"
    else:
        target = tmp_path / "file.bin"
        target.write_bytes(b"\x00" * 100)
        expect = "neither a folder nor"
    with pytest.raises(TrisegError) as err:
        load_cifar10(target, val_size=0)
    assert expect in str(err.value) and "\n" not in str(err.value)


def test_stratified_split_is_deterministic_and_balanced():
    y = torch.arange(1000) % 10
    val, train = stratified_split(y, 100, seed=0)
    val2, _ = stratified_split(y, 100, seed=0)
    assert torch.equal(val, val2)
    assert torch.bincount(y[val], minlength=10).tolist() == [10] * 10
    assert len(set(val.tolist()) & set(train.tolist())) == 0 and len(val) + len(train) == 1000


def test_take_is_a_stratified_subset_of_class_sorted_data():
    """ImageFolder data is sorted by class: the first 300 images would all be class 0."""
    y = torch.arange(10).repeat_interleave(100)
    split = Split(torch.arange(1000).view(-1, 1, 1, 1).expand(-1, 3, 32, 32).to(torch.uint8), y)
    sub = split.take(300)
    assert len(sub) == 300 and torch.bincount(sub.y, minlength=10).tolist() == [30] * 10
    assert torch.equal(sub.y, split.take(300).y) and torch.equal(sub.y, sub.y.sort().values)
    assert split.take(None) is split and split.take(1000) is split and split.take(5000) is split


def test_augment_crops_and_flips_whole_batches():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    again = augment(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    # a crop of the padded image: every output row is a (possibly flipped) shifted input row or zeros
    ones = torch.ones(64, 3, 32, 32, dtype=torch.uint8)
    cropped = augment(ones, gen)
    assert (cropped.float().mean() < 1.0) and (cropped.float().mean() > 0.6)


def test_batches_cover_the_split_once(sample):
    seen = torch.cat([y for _, y in batches(sample.train, 100, shuffle=True)])
    assert torch.equal(torch.sort(seen).values, torch.sort(sample.train.y).values)
    x, _ = next(batches(sample.train, 8))
    assert x.dtype == torch.float32 and abs(float(x.mean())) < 1.0


def test_real_archive_splits(real_data_path):
    data = load_cifar10(real_data_path, val_size=5000)
    assert (len(data.train), len(data.val), len(data.test)) == (45000, 5000, 8000)
    assert data.classes[0] == "airplane" and len(data.classes) == 10
    assert torch.bincount(data.val.y).tolist() == [500] * 10
    assert torch.bincount(data.test.y).tolist() == [800] * 10
