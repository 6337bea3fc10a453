"""The tri-segment map as a lookup table, on both execution paths.

* INT8 path: read the codes of the quantized tensor, index a 256-entry table, rebuild the tensor
  with the same scale and zero point (CPU, real INT8 kernels around it).
* Float path: codes = round(x / scale), the same map, back to ``code * scale``; runs on any device
  and is what the integer simulation (:mod:`triseg.approx.intsim`) and fake-quant models use.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from triseg.approx.config import LayerCodes


def map_codes(codes: torch.Tensor, c: LayerCodes) -> torch.Tensor:
    """Apply the map to integer codes of any dtype (the reference semantics)."""
    out = codes.clone()
    out = torch.where((codes > 0) & (codes <= c.t1), torch.zeros_like(codes), out)
    out = torch.where((codes > c.t1) & (codes <= c.t2), torch.full_like(codes, c.v1), out)
    return torch.where((codes > c.t2) & (codes <= c.tmax), torch.full_like(codes, c.v2), out)


def quint8_table(c: LayerCodes, zero_point: int) -> torch.Tensor:
    """256-entry uint8 table from quantized value q to mapped q (covers codes above the observer range)."""
    q = torch.arange(256, dtype=torch.int32)
    return (map_codes(q - zero_point, c) + zero_point).clamp(0, 255).to(torch.uint8)


@functools.lru_cache(maxsize=65536)
def _numpy_table(c: LayerCodes, zero_point: int) -> np.ndarray:
    return quint8_table(c, zero_point).numpy()


class LutEdit:
    """A recorder edit that applies one layer's map on either path."""

    def __init__(self, codes: LayerCodes) -> None:
        self.codes = codes

    def __call__(self, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
        if x.is_quantized:
            return self.int8_path(x, scale, zero_point)
        return self.float_path(x, scale)

    def int8_path(self, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
        """Index the uint8 table with the tensor's own codes (numpy's uint8 gather is ~4x torch's).

        The gather runs over the codes in memory order, so the result keeps the input's layout
        (channels_last stays channels_last and the next INT8 conv need not reorder it).
        """
        codes = x.int_repr()
        if not (codes.is_contiguous() or codes.is_contiguous(memory_format=torch.channels_last)):
            codes = codes.contiguous()
        out = torch.empty_like(codes)
        flat = (codes.numel(),)
        np.take(_numpy_table(self.codes, zero_point), codes.as_strided(flat, (1,)).numpy(),
                out=out.as_strided(flat, (1,)).numpy())
        return torch._make_per_tensor_quantized_tensor(out, scale, zero_point)

    def float_path(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """Map a float activation on the quantization grid (codes = round(x / scale))."""
        return map_codes(torch.round(x / scale), self.codes) * scale
