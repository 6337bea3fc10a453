"""CIFAR-10 loading (torchvision pickles, ImageFolder trees, tar archives), the uint8 cache,
the stratified validation split and batched augmentation on tensors."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from triseg.errors import TrisegError

DATA_ENV = "TRISEG_DATA_DIR"
SAMPLE_ARCHIVE = Path(__file__).parent / "assets" / "cifar10-sample.tar.gz"
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
CACHE_VERSION = 1


@dataclass
class Split:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def take(self, n: int | None) -> "Split":
        """The first ``n`` images (all when ``n`` is None)."""
        return self if n is None else Split(self.x[:n], self.y[:n])


@dataclass
class Cifar10:
    """The three splits. ``val`` is carved from the original train split."""

    train: Split
    val: Split
    test: Split
    classes: list[str]
    source: str


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """``--data-dir``, else ``$TRISEG_DATA_DIR``, else the tiny sample shipped with the package."""
    chosen = data_dir or os.environ.get(DATA_ENV)
    return Path(chosen) if chosen else SAMPLE_ARCHIVE


def load_cifar10(
    data_dir: str | os.PathLike | None = None,
    val_size: int | None = None,
    download: bool = False,
    split_seed: int = 0,
) -> Cifar10:
    """Load CIFAR-10 from any supported layout and carve a stratified validation split.

    ``val_size`` defaults to 5,000 images, or 10 % of a smaller training split.
    """
    path = resolve_data_dir(data_dir)
    (train_x, train_y), (test_x, test_y), classes = _load_raw(path, download)
    if val_size is None:
        val_size = min(5000, len(train_y) // 10)
    if not 0 <= val_size < len(train_y):
        raise TrisegError(f"--val-size {val_size} must be in [0, {len(train_y)}) for {path}")
    val_idx, train_idx = stratified_split(train_y, val_size, split_seed)
    return Cifar10(
        train=Split(train_x[train_idx], train_y[train_idx]),
        val=Split(train_x[val_idx], train_y[val_idx]),
        test=Split(test_x, test_y),
        classes=classes,
        source=str(path),
    )


def stratified_split(y: torch.Tensor, val_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic stratified split: (val indices, train indices), each sorted."""
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(y)
    per_class = [torch.nonzero(y == c).flatten() for c in classes]
    quotas = [val_size * len(idx) // len(y) for idx in per_class]
    for i in range(val_size - sum(quotas)):
        quotas[i % len(quotas)] += 1
    val = [idx[torch.randperm(len(idx), generator=gen)[:q]] for idx, q in zip(per_class, quotas)]
    val_idx = torch.sort(torch.cat(val)).values if val else torch.empty(0, dtype=torch.long)
    mask = torch.ones(len(y), dtype=torch.bool)
    mask[val_idx] = False
    return val_idx, torch.nonzero(mask).flatten()


RawSplits = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], list[str]]


def _load_raw(path: Path, download: bool) -> RawSplits:
    if (path / "cifar-10-batches-py").is_dir() or (download and not path.exists()) or (
        download and path.is_dir() and not (path / "train").is_dir()
    ):
        return _load_pickles(path, download)
    if not path.exists():
        raise TrisegError(f"data path {path} does not exist (pass --data-dir, or --download for CIFAR-10)")
    cache = _cache_path(path)
    if cache.exists():
        blob = torch.load(cache, weights_only=True)
        if blob.get("version") == CACHE_VERSION:
            return (blob["train_x"], blob["train_y"]), (blob["test_x"], blob["test_y"]), list(blob["classes"])
    raw = _load_image_folder(path)
    _write_cache(cache, raw)
    return raw


def _cache_path(path: Path) -> Path:
    """A cache file beside the data, or in ~/.cache/triseg when that folder is read-only.

    Read-only is judged by the permission bits, so that root also leaves read-only folders alone.
    """
    stat = path.stat()
    key = hashlib.sha1(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    beside = path.parent / f".{path.name}.triseg-cache-{key}.pt"
    if path.parent.stat().st_mode & 0o222 and os.access(path.parent, os.W_OK):
        return beside
    home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "triseg"
    return home / f"{path.name}-{key}.pt"


def _write_cache(cache: Path, raw: RawSplits) -> None:
    (train_x, train_y), (test_x, test_y), classes = raw
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".tmp{os.getpid()}")
    torch.save(
        {"version": CACHE_VERSION, "train_x": train_x, "train_y": train_y,
         "test_x": test_x, "test_y": test_y, "classes": classes},
        tmp,
    )
    os.replace(tmp, cache)


def _load_pickles(path: Path, download: bool) -> RawSplits:
    root = path / "cifar-10-batches-py"
    if not root.is_dir():
        if not download:
            raise TrisegError(f"{root} not found (pass --download to fetch CIFAR-10)")
        from torchvision.datasets import CIFAR10

        try:
            CIFAR10(str(path), train=True, download=True)
        except Exception as exc:  # network errors come in many types
            raise TrisegError(f"could not download CIFAR-10 into {path}: {exc}") from None

    def read(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            file = root / name
            if not file.exists():
                raise TrisegError(f"{file} is missing from the cifar-10-batches-py folder")
            with open(file, "rb") as fh:
                entry = pickle.load(fh, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            ys.append(np.asarray(entry["labels"], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    with open(root / "batches.meta", "rb") as fh:
        classes = list(pickle.load(fh, encoding="latin1")["label_names"])
    train = read([f"data_batch_{i}" for i in range(1, 6)])
    return train, read(["test_batch"]), classes


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB").resize((32, 32)) if img.size != (32, 32) else img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError):
        raise TrisegError(f"unreadable image: {name}") from None
    return arr.transpose(2, 0, 1)


def _load_image_folder(path: Path) -> RawSplits:
    """Read ``train/<class>/*`` and ``test/<class>/*`` from a folder or a .tar/.tar.gz archive."""
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {"train": {}, "test": {}}
    if path.is_dir():
        for split in files:
            root = path / split
            if not root.is_dir():
                raise TrisegError(f"{path} has no {split}/ folder (expected train/<class>/*, test/<class>/*)")
            for cls_dir in sorted(p for p in root.iterdir() if p.is_dir()):
                files[split][cls_dir.name] = [
                    (str(f), f.read_bytes()) for f in sorted(cls_dir.iterdir())
                    if f.suffix.lower() in IMAGE_SUFFIXES
                ]
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as tar:
            for member in tar:
                parts = Path(member.name).parts
                parts = parts[1:] if parts and parts[0] == "." else parts
                if len(parts) >= 2 and parts[0] in files and member.isdir() and len(parts) == 2:
                    files[parts[0]].setdefault(parts[1], [])
                if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                if len(parts) < 3 or parts[0] not in files:
                    continue
                data = tar.extractfile(member).read()
                files[parts[0]].setdefault(parts[1], []).append((f"{path}:{member.name}", data))
        for split in files:
            if not files[split]:
                raise TrisegError(f"archive {path} has no {split}/ folder (expected train/<class>/*, test/<class>/*)")
    else:
        raise TrisegError(f"{path} is neither a folder nor a .tar/.tar.gz archive")

    classes = sorted(files["train"])
    if classes != sorted(files["test"]):
        raise TrisegError(
            f"class folders differ between train and test in {path}: "
            f"train {classes}, test {sorted(files['test'])}"
        )
    out = []
    for split in ("train", "test"):
        xs, ys = [], []
        for label, cls in enumerate(classes):
            for name, data in sorted(files[split][cls]):
                xs.append(_decode(data, name))
                ys.append(label)
        if not xs:
            raise TrisegError(f"no images found under {split}/ in {path}")
        out.append((torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.int64)))
    return out[0], out[1], classes


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) to normalised float32."""
    mean = torch.tensor(CIFAR_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with padding 4 and horizontal flip, on a whole uint8 batch at once."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dy = torch.randint(0, 9, (n,), generator=gen)
    dx = torch.randint(0, 9, (n,), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None, :])
    cols = dx[:, None] + torch.arange(w)[None, :]
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_n = torch.arange(n)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


def batches(
    split: Split,
    batch_size: int,
    shuffle: bool = False,
    augment_data: bool = False,
    gen: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches and labels; shuffling and augmentation draw from ``gen``."""
    gen = gen if gen is not None else torch.Generator().manual_seed(0)
    n = len(split)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        x = split.x[idx]
        if augment_data:
            x = augment(x, gen)
        yield normalize(x), split.y[idx]


def num_batches(split: Split, batch_size: int, drop_last: bool = False) -> int:
    """How many batches :func:`batches` yields."""
    return len(split) // batch_size if drop_last else -(-len(split) // batch_size)
