"""LeNet-5 for 32x32 RGB: conv 3->6 5x5, pool, conv 6->16 5x5, pool, fc 400->120->84->10."""

import torch
from torch import nn
import torch.nn.functional as F

from triseg.models.base import ConvBNReLU, LinearReLU, TapModel


class LeNet5(TapModel):
    TAP_MODULES = {"conv1": "conv1", "conv2": "conv2", "fc1": "classifier.fc1", "fc2": "classifier.fc2"}
    ATTENTION_LAYERS = ("conv2", "fc1")

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 6, 5, padding=0)
        self.conv2 = ConvBNReLU(6, 16, 5, padding=0)
        self.classifier = nn.ModuleDict(
            {"fc1": LinearReLU(400, 120), "fc2": LinearReLU(120, 84), "fc3": nn.Linear(84, num_classes)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = F.max_pool2d(self.tap("conv1", self.conv1(x)), 2)
        x = F.max_pool2d(self.tap("conv2", self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = self.tap("fc1", self.classifier["fc1"](x))
        x = self.tap("fc2", self.classifier["fc2"](x))
        return self.dequant(self.classifier["fc3"](x))
