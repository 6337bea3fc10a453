"""Network in Network (Lin et al. 2014) for CIFAR-10, with BatchNorm; the last 1x1 conv is the classifier."""

import torch
from torch import nn
import torch.nn.functional as F

from triseg.models.base import ConvBNReLU, TapModel

LAYERS = {
    "conv1_1": (3, 192, 5), "conv1_2": (192, 160, 1), "conv1_3": (160, 96, 1),
    "conv2_1": (96, 192, 5), "conv2_2": (192, 192, 1), "conv2_3": (192, 192, 1),
    "conv3_1": (192, 192, 3), "conv3_2": (192, 192, 1),
}


class NiN(TapModel):
    TAP_MODULES = {name: f"features.{name}" for name in LAYERS}
    ATTENTION_LAYERS = ("conv1_3", "conv2_3", "conv3_2")

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.ModuleDict({name: ConvBNReLU(*spec) for name, spec in LAYERS.items()})
        self.head = nn.Conv2d(192, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        for name in LAYERS:
            x = self.tap(name, self.features[name](x))
            if name == "conv1_3":
                x = F.max_pool2d(x, 3, 2, 1)
            elif name == "conv2_3":
                x = F.avg_pool2d(x, 3, 2, 1)
        x = F.adaptive_avg_pool2d(self.head(x), 1)
        return self.dequant(torch.flatten(x, 1))
