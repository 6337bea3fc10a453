"""The tri-segment map as a lookup table, on both execution paths.

* INT8 path: read the codes of the quantized tensor in place, map them, write a new quantized tensor
  with the same scale, zero point and layout (CPU, real INT8 kernels around it).
* Float path: codes = round(x / scale), the same map, back to ``code * scale``; runs on any device
  and is what the integer simulation (:mod:`triseg.approx.intsim`) and fake-quant models use.

The INT8 kernel evaluates the map as its three segment tests per code (a monotone step function is
three compares and selects, which vectorise) with numba when it is installed (``pip install
triseg[fast]``), at memory bandwidth on one thread; without numba it is numpy's gather on the
256-entry table (about 10x slower, same bytes). Both are exact: :func:`map_codes` is the reference.
A batch can carry one map per block of rows (``maps`` of shape (K, 5)): block k of the batch gets
map k, which is how one forward pass scores K configs (:meth:`triseg.search.base.Evaluator.score_many`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np
import torch

from triseg.approx.config import LayerCodes

try:
    import numba
except ImportError:  # the pure fallback below
    numba = None

KERNELS = ("numba", "numpy") if numba is not None else ("numpy",)
IDENTITY = (0, 0, 0, 0, 0)  # a map row whose three segments are empty: codes pass unchanged


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


def map_rows(maps: Sequence[LayerCodes | None]) -> np.ndarray:
    """(K, 5) int64 rows (t1, v1, t2, v2, tmax) of K maps; None (no map) is the identity row."""
    return np.array([IDENTITY if c is None else (c.t1, c.v1, c.t2, c.v2, c.tmax) for c in maps], dtype=np.int64)


def _numpy_maps(codes: np.ndarray, out: np.ndarray, maps: np.ndarray, zero_point: int, chunk: int) -> None:
    for k, row in enumerate(maps):
        sl = slice(k * chunk, (k + 1) * chunk)
        np.take(_numpy_table(LayerCodes(*map(int, row)), zero_point), codes[sl], out=out[sl])


if numba is not None:
    @numba.njit(inline="always")
    def _numba_block(codes, out, lo, b1, b2, b3, w0, w1, w2):  # pragma: no cover - compiled
        for i in range(codes.size):  # a loop of its own over one block: LLVM vectorises it (16 bytes/cycle)
            q = np.int16(codes[i])
            r = q  # later segments win, as in map_codes
            r = w0 if (q > lo) & (q <= b1) else r
            r = w1 if (q > b1) & (q <= b2) else r
            r = w2 if (q > b2) & (q <= b3) else r
            out[i] = np.uint8(r)

    @numba.njit(cache=True, nogil=True)
    def _numba_maps(codes: np.ndarray, out: np.ndarray, maps: np.ndarray, zero_point: int,
                    chunk: int) -> None:  # pragma: no cover - compiled
        for k in range(maps.shape[0]):
            # Segment bounds in quantized-value space, clamped to [-1, 255]: the same tests for q in [0, 255].
            lo = np.int16(min(max(zero_point, -1), 255))
            b1 = np.int16(min(max(zero_point + maps[k, 0], -1), 255))
            b2 = np.int16(min(max(zero_point + maps[k, 2], -1), 255))
            b3 = np.int16(min(max(zero_point + maps[k, 4], -1), 255))
            w0 = np.int16(min(max(zero_point, 0), 255))
            w1 = np.int16(min(max(zero_point + maps[k, 1], 0), 255))
            w2 = np.int16(min(max(zero_point + maps[k, 3], 0), 255))
            sl = slice(k * chunk, (k + 1) * chunk)
            _numba_block(codes[sl], out[sl], lo, b1, b2, b3, w0, w1, w2)


if numba is not None:
    @numba.njit(cache=True, nogil=True)
    def _numba_lookup(codes: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
        for i in range(codes.size):
            out[i] = table[codes[i]]


if numba is not None:
    @numba.njit(cache=True, nogil=True)
    def _numba_lookup_planes(codes: np.ndarray, tables: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
        c = tables.shape[0]
        for plane in range(codes.shape[0]):
            table = tables[plane % c]
            src, dst = codes[plane], out[plane]
            for i in range(src.size):
                dst[i] = table[src[i]]


def lookup_planes(x: torch.Tensor, tables: torch.Tensor) -> torch.Tensor:
    """float32 ``tables[c, x[n, c, ...]]`` of a contiguous uint8 (N, C, ...) tensor: a per-channel function
    of the byte (input normalisation, for one) in one pass."""
    n, c = x.shape[:2]
    if numba is None:
        return tables[torch.arange(c).view(1, c, *([1] * (x.dim() - 2))), x.long()]
    out = torch.empty(x.shape, dtype=torch.float32)
    _numba_lookup_planes(x.contiguous().view(n * c, -1).numpy(), tables.numpy(), out.view(n * c, -1).numpy())
    return out


@functools.lru_cache(maxsize=4096)
def value_table(scale: float, zero_point: int, squared: bool = False) -> np.ndarray:
    """The float32 value (or its square) of each of the 256 quint8 values, computed by torch's own
    ``dequantize`` (and ``pow(2)``), so a lookup gives exactly what those ops give elementwise."""
    q = torch._make_per_tensor_quantized_tensor(torch.arange(256, dtype=torch.uint8), scale, zero_point)
    values = q.dequantize()
    return (values.pow(2) if squared else values).numpy()


def int8_values(x: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """``x.dequantize()`` (``squared``: ``x.dequantize().pow(2)``) of a quint8 tensor by one table lookup per
    code, in ``x``'s layout: the same float32 values in one pass instead of two."""
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    table = value_table(float(x.q_scale()), int(x.q_zero_point()), squared)
    out = torch.empty_strided(x.shape, x.stride(), dtype=torch.float32)
    codes, flat = _uint8_view(x), out.as_strided((out.numel(),), (1,)).numpy()
    if numba is not None:
        _numba_lookup(codes, table, flat)
    else:
        np.take(table, codes, out=flat)
    return out


def apply_maps(codes: np.ndarray, out: np.ndarray, maps: np.ndarray, zero_point: int,
               kernel: str | None = None) -> None:
    """Map flat quint8 values ``codes`` into ``out``: block k of K equal blocks through map row k."""
    chunk = codes.size // len(maps)
    if chunk * len(maps) != codes.size:
        raise ValueError(f"{codes.size} codes do not split into {len(maps)} equal blocks")
    if (kernel or KERNELS[0]) == "numba":
        _numba_maps(codes, out, maps, zero_point, chunk)
    else:
        _numpy_maps(codes, out, maps, zero_point, chunk)


def _uint8_view(x: torch.Tensor) -> np.ndarray:
    """The quint8 tensor's values as a flat numpy uint8 array over its own memory (no copy)."""
    view = torch.empty(0, dtype=torch.uint8).set_(x.untyped_storage(), x.storage_offset(), (x.numel(),), (1,))
    return view.numpy()


def int8_maps(x: torch.Tensor, maps: np.ndarray, zero_point: int, kernel: str | None = None) -> torch.Tensor:
    """A new quint8 tensor like ``x`` (same quantization and layout), its K row blocks through ``maps``."""
    if x.dtype != torch.quint8:
        raise ValueError(f"the INT8 path maps quint8 activations, got {x.dtype}")
    if not (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)):
        x = x.contiguous()
    out = torch.empty_like(x)
    apply_maps(_uint8_view(x), _uint8_view(out), maps, zero_point, kernel)
    return out


def float_maps(x: torch.Tensor, scale: float, maps: np.ndarray) -> torch.Tensor:
    """The float path with K maps over K row blocks of ``x``: each block as :meth:`LutEdit.float_path`
    would map it, an identity row leaves its block as it is."""
    k = len(maps)
    rows = torch.as_tensor(maps, device=x.device).repeat_interleave(x.shape[0] // k, 0)
    t1, v1, t2, v2, tmax = (rows[:, i].to(x.dtype).view(-1, *([1] * (x.dim() - 1))) for i in range(5))
    codes = torch.round(x / scale)
    out = torch.where((codes > 0) & (codes <= t1), torch.zeros_like(codes), codes)
    out = torch.where((codes > t1) & (codes <= t2), v1.expand_as(codes), out)
    out = torch.where((codes > t2) & (codes <= tmax), v2.expand_as(codes), out) * scale
    return torch.where(rows.any(1).view_as(t1), out, x)


class LutEdit:
    """A recorder edit that applies one layer's map on either path."""

    def __init__(self, codes: LayerCodes) -> None:
        self.codes = codes
        self.rows = map_rows([codes])

    def __call__(self, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
        if x.is_quantized:
            return self.int8_path(x, scale, zero_point)
        return self.float_path(x, scale)

    def int8_path(self, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
        """Map the tensor's own codes (read in place, in memory order, so channels_last stays channels_last
        and the next INT8 conv need not reorder it); the result keeps ``x``'s scale and zero point."""
        return int8_maps(x, self.rows, zero_point)

    def float_path(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        """Map a float activation on the quantization grid (codes = round(x / scale))."""
        return map_codes(torch.round(x / scale), self.codes) * scale
