"""Shared fixtures: the real CIFAR-10 archive (skipped when absent) and small built models."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from triseg import artifacts, quant
from triseg.data import DATA_ENV, Split, batches, load_cifar10
from triseg.models import build_model

REAL_DATA = Path(os.environ.get("TRISEG_TEST_DATA",
                                Path(__file__).resolve().parents[2] / "shared/data/cifar10-jpg.tar.gz"))

# The suite reads the shipped sample unless a test names its data (the real archive: $TRISEG_TEST_DATA), so a
# developer's $TRISEG_DATA_DIR must not change what a test reads, in-process or in a subprocess.
os.environ.pop(DATA_ENV, None)
warnings.filterwarnings("ignore", message=r".*(deprecated|TypedStorage).*")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def real_data_path() -> Path:
    """The full CIFAR-10 JPEG archive beside the checkout (../shared/data), or skip."""
    if not REAL_DATA.exists():
        pytest.skip(f"real CIFAR-10 archive not found at {REAL_DATA} (only the developers' machines have it)")
    return REAL_DATA


@pytest.fixture(scope="session")
def sample():
    """The tiny sample shipped in the package (480 train / 120 test images)."""
    return load_cifar10(None, val_size=48)


@pytest.fixture(scope="session")
def lenet_int8():
    """The zoo's LeNet-5 INT8 model and its QAT twin."""
    int8, backend = artifacts.load_int8(artifacts.ZOO_DIR, "lenet5")
    quant.set_engine(backend)
    qat, _ = artifacts.load_qat(artifacts.ZOO_DIR, "lenet5")
    return int8, qat, backend


@pytest.fixture(scope="session")
def calibrated_int8(sample):
    """Untrained MobileNetV1 (depthwise convs) and NiN (1x1 convs, average pools, a pooled conv head),
    calibrated on two batches of the sample and converted for fbgemm, by name."""
    models, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    for name in ("mobilenetv1", "nin"):
        torch.manual_seed(0)
        model = artifacts.prepare_for_qat(build_model(name), "fbgemm")
        with torch.no_grad():
            for _, (x, _) in zip(range(2), batches(sample.train, 16)):
                model(x)
        models[name] = quant.convert(model.eval(), "fbgemm")
    torch.set_num_threads(threads)
    return models


def tiny_split(split: Split, n: int) -> Split:
    """A class-stratified subset of ``n`` images of a split."""
    return split.take(n)


@pytest.fixture
def one_thread():
    """Tiny tensors (PPO, soft maps) run far faster on one thread than on two busy ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
