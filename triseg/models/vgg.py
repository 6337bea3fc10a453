"""VGG16 / VGG19 with BatchNorm for CIFAR-10; taps ``block_output.conv<stage>_<i>``."""

import torch
from torch import nn
import torch.nn.functional as F

from triseg.models.base import ConvBNReLU, TapModel

STAGES = {16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)


def _conv_names(depth: int) -> list[str]:
    return [f"conv{s + 1}_{i + 1}" for s, n in enumerate(STAGES[depth]) for i in range(n)]


class _VGG(TapModel):
    DEPTH = 16

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        cin = 3
        self.features = nn.ModuleDict()
        for s, n in enumerate(STAGES[self.DEPTH]):
            for i in range(n):
                self.features[f"conv{s + 1}_{i + 1}"] = ConvBNReLU(cin, WIDTHS[s], 3)
                cin = WIDTHS[s]
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        for s, n in enumerate(STAGES[self.DEPTH]):
            for i in range(n):
                name = f"conv{s + 1}_{i + 1}"
                x = self.tap(name, self.features[name](x))
            x = F.max_pool2d(x, 2)
        return self.dequant(self.fc(torch.flatten(x, 1)))


class VGG16(_VGG):
    DEPTH = 16
    TAP_MODULES = {name: f"features.{name}" for name in _conv_names(16)}
    ATTENTION_LAYERS = ("conv3_1", "conv4_1", "conv5_1")


class VGG19(_VGG):
    DEPTH = 19
    TAP_MODULES = {name: f"features.{name}" for name in _conv_names(19)}
    ATTENTION_LAYERS = ("conv3_1", "conv4_1", "conv5_1")
