"""CIFAR ResNets (He et al. 2016): ResNet-20 (3 stages x 3 blocks, 16-64 channels) and ResNet-18.

Taps: ``stem``, each block's first conv ``layerS.B.conv1`` and each block's output ``layerS.B``
(after the quantization-friendly add+ReLU). Downsampling shortcuts are 1x1 conv + BN.
"""

import torch
from torch import nn
import torch.nn.functional as F

from triseg import quant
from triseg.models.base import ConvBNReLU, TapModel


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(cin, cout, 3, stride)
        self.conv2 = ConvBNReLU(cout, cout, 3, relu=False)
        self.shortcut = ConvBNReLU(cin, cout, 1, stride, relu=False) if stride != 1 or cin != cout else None
        self.add = quant.FloatFunctional()


def _tap_modules(blocks: tuple[int, ...]) -> dict[str, str]:
    taps = {"stem": "stem"}
    for s, n in enumerate(blocks, start=1):
        for b in range(n):
            taps[f"layer{s}.{b}.conv1"] = f"layer{s}.{b}.conv1"
            taps[f"layer{s}.{b}"] = f"layer{s}.{b}.add"
    return taps


class _ResNet(TapModel):
    BLOCKS: tuple[int, ...] = (3, 3, 3)
    WIDTHS: tuple[int, ...] = (16, 32, 64)

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, self.WIDTHS[0], 3)
        cin = self.WIDTHS[0]
        for s, (n, width) in enumerate(zip(self.BLOCKS, self.WIDTHS), start=1):
            blocks = []
            for b in range(n):
                blocks.append(BasicBlock(cin, width, 2 if b == 0 and s > 1 else 1))
                cin = width
            setattr(self, f"layer{s}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.tap("stem", self.stem(self.quant(x)))
        for s in range(1, len(self.BLOCKS) + 1):
            for b, block in enumerate(getattr(self, f"layer{s}")):
                out = self.tap(f"layer{s}.{b}.conv1", block.conv1(x))
                skip = x if block.shortcut is None else block.shortcut(x)
                x = self.tap(f"layer{s}.{b}", block.add.add_relu(block.conv2(out), skip))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.dequant(self.fc(x))


class ResNet20(_ResNet):
    BLOCKS = (3, 3, 3)
    WIDTHS = (16, 32, 64)
    TAP_MODULES = _tap_modules(BLOCKS)
    ATTENTION_LAYERS = ("layer1.2", "layer2.2", "layer3.2")


class ResNet18(_ResNet):
    BLOCKS = (2, 2, 2, 2)
    WIDTHS = (64, 128, 256, 512)
    TAP_MODULES = _tap_modules(BLOCKS)
    ATTENTION_LAYERS = ("layer2.1", "layer3.1", "layer4.1")
