"""CIFAR-10 loading (torchvision pickles, ImageFolder trees, tar archives), the uint8 cache,
the stratified validation split and batched augmentation on tensors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import re
import sys
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from triseg.errors import TrisegError
from triseg.paths import atomic_open, clean_stale_temps, pid_alive

DATA_ENV = "TRISEG_DATA_DIR"
SAMPLE_ARCHIVE = Path(__file__).parent / "assets" / "cifar10-sample.tar.gz"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
"""CIFAR-10's classes in label order (also their sorted order, which an ImageFolder tree's labels follow)."""
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp"}
SPLITS = ("train", "test")
LAYOUT = "expected train/<class>/*, test/<class>/*, at the top or one folder down"
CACHE_VERSION = 1


@dataclass
class Split:
    """Images as uint8 (N, 3, 32, 32) and labels as int64 (N,)."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)

    def take(self, n: int | None) -> "Split":
        """A fixed class-stratified subset of ``n`` images, in their original order (all when ``n`` is None
        or at least the split's size). Not the first ``n``: ImageFolder data is sorted by class."""
        if n is None or n >= len(self):
            return self
        idx, _ = stratified_split(self.y, n)
        return Split(self.x[idx], self.y[idx])


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
    expect_classes: Sequence[str] | None = None,
) -> Cifar10:
    """Load CIFAR-10 from any supported layout and carve a stratified validation split.

    ``val_size`` defaults to 5,000 images, or 10 % of a smaller training split. ``expect_classes``, when
    given, are the classes a model predicts, in label order: other data than that many classes is an
    error, other names a warning (label i is the data's i-th class, whatever its name).
    """
    path = resolve_data_dir(data_dir)
    raw, save_cache = _load_raw(path, download)
    (train_x, train_y), (test_x, test_y), classes = raw
    if expect_classes is not None:
        _check_classes(path, classes, list(expect_classes))
    if val_size is None:
        val_size = min(5000, len(train_y) // 10)
    if not 0 <= val_size < len(train_y):
        raise TrisegError(f"--val-size {val_size} must be in [0, {len(train_y)}) for {path}")
    if save_cache is not None:
        save_cache()
    val_idx, train_idx = stratified_split(train_y, val_size, split_seed)
    return Cifar10(
        train=Split(train_x[train_idx], train_y[train_idx]),
        val=Split(train_x[val_idx], train_y[val_idx]),
        test=Split(test_x, test_y),
        classes=classes,
        source=str(path),
    )


def _listed(names: list[str], limit: int = 12) -> str:
    """The first ``limit`` names, comma-separated."""
    return ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")


def _check_classes(path: Path, classes: list[str], expected: list[str]) -> None:
    """An error unless the data has as many classes as expected; a warning when their names differ."""
    if len(classes) != len(expected):
        noun = "class" if len(classes) == 1 else "classes"
        raise TrisegError(f"{path} has {len(classes)} {noun} ({_listed(classes)}); the models predict "
                          f"{len(expected)} ({_listed(expected)})")
    if classes != expected:
        pairs = ", ".join(f"{c} as {e}" for c, e in zip(classes[:2], expected))
        warnings.warn(f"{path}'s classes are {_listed(classes)}, not {_listed(expected)}: its i-th class is scored "
                      f"as the models' i-th ({pairs}, ...)")


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


def _load_raw(path: Path, download: bool) -> tuple[RawSplits, Callable[[], None] | None]:
    """The splits at ``path``, and (for decoded images) the function that writes their cache.

    The cache is written by the caller once every input is checked, so a failing run leaves no file.
    """
    if (path / "cifar-10-batches-py").is_dir() or (download and not path.exists()) or (
        download and path.is_dir() and not (path / "train").is_dir()
    ):
        return _load_pickles(path, download), None
    if not path.exists():
        raise TrisegError(f"data path {path} does not exist (pass --data-dir, or --download for CIFAR-10)")
    cache = _cache_path(path)
    clean_stale_temps(cache.parent)
    _clean_old_cache_temps(cache.parent)
    cached = _read_cache(cache)
    if cached is not None:
        return cached, None
    raw = _load_image_folder(path)
    return raw, lambda: _write_cache(cache, raw)


OLD_CACHE_TEMP = re.compile(r"triseg-cache-[0-9a-f]+\.tmp(\d+)$")


def _clean_old_cache_temps(folder: Path) -> None:
    """Remove the ``<cache>.tmp<pid>`` files that killed decodes of earlier versions left (dead pid only)."""
    with contextlib.suppress(OSError):
        for p in folder.iterdir():
            m = OLD_CACHE_TEMP.search(p.name)
            if m is not None and not pid_alive(int(m.group(1))) and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()


def _read_cache(cache: Path) -> RawSplits | None:
    """The decoded splits in ``cache``; None when it is missing, and a note when it is damaged (then rebuilt)."""
    if not cache.exists():
        return None
    try:
        blob = torch.load(cache, weights_only=True)
        if blob.get("version") != CACHE_VERSION:
            return None
        train = (blob["train_x"], blob["train_y"])
        test = (blob["test_x"], blob["test_y"])
        for x, y in (train, test):
            if x.dtype != torch.uint8 or x.ndim != 4 or tuple(x.shape[1:]) != (3, 32, 32) or len(x) != len(y):
                raise ValueError("unexpected shapes")
        return train, test, [str(c) for c in blob["classes"]]
    except Exception as exc:  # a truncated or foreign file fails in many ways
        print(f"note: data cache {cache} is damaged ({type(exc).__name__}); decoding the images again",
              file=sys.stderr)
        return None


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
    """Save the decoded splits (``.<name>.<pid>.tmp``, then rename); a cache that cannot be written is a note."""
    (train_x, train_y), (test_x, test_y), classes = raw
    try:
        with atomic_open(cache, "wb") as fh:
            torch.save({"version": CACHE_VERSION, "train_x": train_x, "train_y": train_y,
                        "test_x": test_x, "test_y": test_y, "classes": classes}, fh)
    except OSError as exc:
        print(f"note: data cache {cache} not written ({exc.strerror or exc}); the images are decoded again "
              f"next time", file=sys.stderr)


def _read_pickle(file: Path) -> dict[str, Any]:
    """One file of the cifar-10-batches-py folder; a missing or damaged one is a one-line error."""
    if not file.is_file():
        raise TrisegError(f"{file} is missing from the cifar-10-batches-py folder (download CIFAR-10 again)")
    try:
        with open(file, "rb") as fh:
            entry = pickle.load(fh, encoding="latin1")
    except Exception as exc:  # garbage pickles fail in many ways
        raise TrisegError(f"{file} is not a CIFAR-10 python batch ({type(exc).__name__}): download CIFAR-10 "
                          f"again") from None
    if not isinstance(entry, dict):
        raise TrisegError(f"{file} is not a CIFAR-10 python batch: download CIFAR-10 again")
    return entry


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

    meta = _read_pickle(root / "batches.meta")
    classes = meta.get("label_names")
    if not isinstance(classes, list) or not classes:
        raise TrisegError(f"{root / 'batches.meta'} lists no label_names: download CIFAR-10 again")

    def read(names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for name in names:
            file = root / name
            entry = _read_pickle(file)
            try:
                x = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                y = np.asarray(entry["labels"], dtype=np.int64).reshape(-1)
            except (KeyError, TypeError, ValueError) as exc:
                raise TrisegError(f"{file} is not a CIFAR-10 python batch (bad {exc}): download CIFAR-10 "
                                  f"again") from None
            if len(x) != len(y) or (len(y) and not 0 <= y.min() <= y.max() < len(classes)):
                raise TrisegError(f"{file} has {len(x)} images but {len(y)} labels, or labels outside "
                                  f"0..{len(classes) - 1}: download CIFAR-10 again")
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    train = read([f"data_batch_{i}" for i in range(1, 6)])
    return train, read(["test_batch"]), [str(c) for c in classes]


def _decode(data: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            arr = np.asarray(img.convert("RGB").resize((32, 32)) if img.size != (32, 32) else img.convert("RGB"))
    except Exception:  # PIL reports broken files as OSError, ValueError, SyntaxError, DecompressionBombError, ...
        raise TrisegError(f"unreadable image: {name}") from None
    return arr.transpose(2, 0, 1)


def _read_bytes(file: Path) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise TrisegError(f"image {file} cannot be read ({exc.strerror or type(exc).__name__})") from None


def _is_tarfile(path: Path) -> bool:
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except (OSError, EOFError, zlib.error, tarfile.TarError):
        return True  # a damaged archive: reading it names the problem


def _split_member(name: str) -> tuple[str, tuple[str, ...]] | None:
    """(the folder above its split, its path from the split on) of an archive member, or None when the
    member lies in no train/ or test/ folder at the archive's top or one folder down."""
    parts = Path(name).parts
    parts = parts[1:] if parts and parts[0] == "." else parts
    for depth in (0, 1):
        if len(parts) > depth and parts[depth] in SPLITS:
            return "/".join(parts[:depth]), parts[depth:]
    return None


def _read_tar(path: Path, files: dict[str, dict[str, list[tuple[str, bytes]]]]) -> None:
    """Collect ``train/<class>/*`` and ``test/<class>/*`` images of a tar archive into ``files`` (the
    splits may sit in one top folder, as in an archive made from a ``cifar10/`` folder)."""
    tops: set[str] = set()
    with tarfile.open(path) as tar:
        for member in tar:
            found = _split_member(member.name)
            if found is None:
                continue
            top, parts = found
            if member.isdir() and len(parts) == 2:
                tops.add(top)
                files[parts[0]].setdefault(parts[1], [])
            if not member.isfile() or Path(member.name).suffix.lower() not in IMAGE_SUFFIXES or len(parts) < 3:
                continue
            fh = tar.extractfile(member)
            if fh is None:
                continue
            tops.add(top)
            files[parts[0]].setdefault(parts[1], []).append((f"{path}:{member.name}", fh.read()))
    if len(tops) > 1:
        places = ", ".join(f"{t}/" if t else "the top" for t in sorted(tops))
        raise TrisegError(f"archive {path} has train/ or test/ folders in several places ({places}): "
                          f"keep one of them in the archive")


def _split_root(path: Path) -> Path:
    """The folder holding ``train/`` and ``test/``: ``path`` itself, or its one subfolder that does."""
    if any((path / split).is_dir() for split in SPLITS):
        return path
    below = [p for p in sorted(path.iterdir()) if p.is_dir() and any((p / split).is_dir() for split in SPLITS)]
    if len(below) > 1:
        raise TrisegError(f"{path} has train/ or test/ folders in several places "
                          f"({', '.join(p.name + '/' for p in below)}): pass one of them as --data-dir")
    return below[0] if below else path


def _load_image_folder(path: Path) -> RawSplits:
    """Read ``train/<class>/*`` and ``test/<class>/*`` from a folder or a .tar/.tar.gz archive."""
    files: dict[str, dict[str, list[tuple[str, bytes]]]] = {split: {} for split in SPLITS}
    if path.is_dir():
        root = _split_root(path)
        for split in files:
            if not (root / split).is_dir():
                raise TrisegError(f"{path} has no {split}/ folder ({LAYOUT})")
            for cls_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
                files[split][cls_dir.name] = [
                    (str(f), _read_bytes(f)) for f in sorted(cls_dir.iterdir())
                    if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()
                ]
    elif _is_tarfile(path):
        try:
            _read_tar(path, files)
        except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
            raise TrisegError(f"archive {path} is damaged or truncated ({type(exc).__name__}): copy or download "
                              f"it again") from None
        for split in files:
            if not files[split]:
                raise TrisegError(f"archive {path} has no {split}/ folder ({LAYOUT})")
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
            raise TrisegError(f"no images found under {split}/ in {path} (image files end in "
                              f"{', '.join(sorted(IMAGE_SUFFIXES))})")
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
