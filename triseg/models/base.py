"""Building blocks shared by every model: fusable Conv+BN+ReLU / Linear+ReLU and tap points."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from triseg import quant


class ConvBNReLU(nn.Sequential):
    """Conv2d (no bias) + BatchNorm2d + ReLU, fused into one module for QAT."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None,
                 groups: int = 1, relu: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(cin, cout, k, stride, k // 2 if padding is None else padding, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=False))
        super().__init__(*layers)


class LinearReLU(nn.Sequential):
    """Linear + ReLU, fused for QAT."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.Linear(cin, cout), nn.ReLU(inplace=False))


class TapModel(nn.Module):
    """A CIFAR model with a quant stub at the input, a dequant stub at the output and tap points.

    ``TAP_MODULES`` maps each approximated layer to the module whose output the tap sees;
    ``ATTENTION_LAYERS`` names the default attention-transfer layers.
    """

    TAP_MODULES: ClassVar[dict[str, str]] = {}
    ATTENTION_LAYERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        super().__init__()
        self.quant = quant.QuantStub()
        self.dequant = quant.DeQuantStub()
        self.recorder = None

    @classmethod
    def layers(cls) -> list[str]:
        """Approximated layers in forward order."""
        return list(cls.TAP_MODULES)

    @classmethod
    def tap_name(cls, layer: str) -> str:
        """``classifier.<layer>.out`` for FC layers, ``block_output.<layer>`` for the rest."""
        path = cls.TAP_MODULES[layer]
        return f"{path}.out" if path.startswith("classifier.") else f"block_output.{layer}"

    def tap(self, layer: str, x: torch.Tensor) -> torch.Tensor:
        """Call the recorder (if any) on the activation of ``layer``."""
        rec = self.recorder
        return x if rec is None else rec(self.tap_name(layer), x)

    def fuse_model(self) -> "TapModel":
        """Fuse every Conv+BN(+ReLU) and Linear+ReLU block in place (QAT fusion in train mode)."""
        groups = []
        for name, mod in self.named_modules():
            if isinstance(mod, (ConvBNReLU, LinearReLU)) and isinstance(mod[0], (nn.Conv2d, nn.Linear)):
                groups.append([f"{name}.{i}" for i in range(len(mod))])
        quant.fuse(self, groups, qat=self.training)
        return self
