"""AlexNet sized for CIFAR-10 (about 3 M parameters): five convs with BN, three FC layers."""

import torch
from torch import nn
import torch.nn.functional as F

from triseg.models.base import ConvBNReLU, LinearReLU, TapModel


class AlexNet(TapModel):
    TAP_MODULES = {
        "conv1": "conv1", "conv2": "conv2", "conv3": "conv3", "conv4": "conv4", "conv5": "conv5",
        "fc1": "classifier.fc1", "fc2": "classifier.fc2",
    }
    ATTENTION_LAYERS = ("conv3", "conv4", "fc1")

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 3)
        self.conv2 = ConvBNReLU(64, 192, 3)
        self.conv3 = ConvBNReLU(192, 384, 3)
        self.conv4 = ConvBNReLU(384, 256, 3)
        self.conv5 = ConvBNReLU(256, 256, 3)
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.ModuleDict(
            {"fc1": LinearReLU(256 * 4 * 4, 256), "fc2": LinearReLU(256, 256), "fc3": nn.Linear(256, num_classes)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.quant(x)
        x = F.max_pool2d(self.tap("conv1", self.conv1(x)), 2)
        x = F.max_pool2d(self.tap("conv2", self.conv2(x)), 2)
        x = self.tap("conv3", self.conv3(x))
        x = self.tap("conv4", self.conv4(x))
        x = F.max_pool2d(self.tap("conv5", self.conv5(x)), 2)
        x = self.dropout(torch.flatten(x, 1))
        x = self.tap("fc1", self.classifier["fc1"](x))
        x = self.tap("fc2", self.classifier["fc2"](self.dropout(x)))
        return self.dequant(self.classifier["fc3"](x))
