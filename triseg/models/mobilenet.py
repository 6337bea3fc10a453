"""MobileNetV1 (Howard et al. 2017) for 32x32 inputs: a 3x3 stem and 13 depthwise-separable blocks."""

import torch
from torch import nn
import torch.nn.functional as F

from triseg.models.base import ConvBNReLU, TapModel

BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
          (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


def _tap_modules() -> dict[str, str]:
    taps = {"conv0": "conv0"}
    for i in range(1, len(BLOCKS) + 1):
        taps[f"dw{i}"] = f"blocks.{i - 1}.dw"
        taps[f"pw{i}"] = f"blocks.{i - 1}.pw"
    return taps


class _Separable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvBNReLU(cin, cin, 3, stride, groups=cin)
        self.pw = ConvBNReLU(cin, cout, 1)


class MobileNetV1(TapModel):
    TAP_MODULES = _tap_modules()
    ATTENTION_LAYERS = ("pw3", "pw5", "pw11")

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv0 = ConvBNReLU(3, 32, 3)
        cin, blocks = 32, []
        for cout, stride in BLOCKS:
            blocks.append(_Separable(cin, cout, stride))
            cin = cout
        self.blocks = nn.ModuleList(blocks)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tap("conv0", self.conv0(self.quant(x)))
        for i, block in enumerate(self.blocks, start=1):
            x = self.tap(f"dw{i}", block.dw(x))
            x = self.tap(f"pw{i}", block.pw(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.dequant(self.fc(x))
