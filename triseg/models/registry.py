"""The model registry: name -> builder class (which declares its approximated and attention layers).

Adding a model: write ``triseg/models/<family>.py`` with a :class:`TapModel` subclass, then add one
entry to ``MODELS`` below.
"""

from __future__ import annotations

from triseg.data import CIFAR10_CLASSES
from triseg.errors import TrisegError
from triseg.models.alexnet import AlexNet
from triseg.models.base import TapModel
from triseg.models.lenet5 import LeNet5
from triseg.models.mobilenet import MobileNetV1
from triseg.models.nin import NiN
from triseg.models.resnet import ResNet18, ResNet20
from triseg.models.vgg import VGG16, VGG19

MODELS: dict[str, type[TapModel]] = {
    "lenet5": LeNet5,
    "alexnet": AlexNet,
    "vgg16": VGG16,
    "vgg19": VGG19,
    "nin": NiN,
    "mobilenetv1": MobileNetV1,
    "resnet20": ResNet20,
    "resnet18": ResNet18,
}


def model_class(name: str) -> type[TapModel]:
    """The class registered under ``name``; a one-line error lists the valid names."""
    try:
        return MODELS[name]
    except KeyError:
        raise TrisegError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None


def build_model(name: str, num_classes: int = len(CIFAR10_CLASSES)) -> TapModel:
    """A fresh float model."""
    return model_class(name)(num_classes=num_classes)
