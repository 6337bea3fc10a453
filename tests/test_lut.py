"""The lookup table: map semantics at every boundary, the quint8 table, both paths of the edit, the layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from triseg.approx.config import LayerCodes
from triseg.approx.lut import (KERNELS, LutEdit, apply_maps, float_maps, int8_maps, int8_values, map_codes, map_rows,
                               quint8_table)

C = LayerCodes(t1=3, v1=6, t2=9, v2=12, tmax=14)


def test_map_at_every_segment_boundary():
    codes = torch.tensor([-5, -1, 0, 1, 3, 4, 8, 9, 10, 13, 14, 15, 200])
    expect = [-5, -1, 0, 0, 0, 6, 6, 6, 12, 12, 12, 15, 200]
    assert map_codes(codes, C).tolist() == expect


def test_quint8_table_respects_zero_point_and_covers_all_codes():
    table = quint8_table(C, zero_point=5)
    assert table.shape == (256,) and table.dtype == torch.uint8
    assert table[5] == 5 and table[5 + 3] == 5 and table[5 + 4] == 5 + 6 and table[5 + 14] == 5 + 12
    assert table[5 + 15] == 5 + 15 and table[255] == 255 and table[0] == 0


def test_int8_and_float_paths_of_the_edit_agree():
    vals = torch.arange(0, 40, dtype=torch.float32) * 0.25
    q = torch.quantize_per_tensor(vals, 0.25, 0, torch.quint8)
    edit = LutEdit(C)
    int8 = edit(q, 0.25, 0)
    flt = edit(vals, 0.25, 0)
    assert int8.is_quantized and int8.q_scale() == 0.25
    assert torch.equal(int8.dequantize(), flt)
    assert torch.equal((flt / 0.25).round(), map_codes(torch.arange(40), C).float())


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_int8_path_keeps_the_layout_and_maps_every_element(layout):
    gen = torch.Generator().manual_seed(0)
    vals = torch.randint(0, 60, (2, 3, 4, 5), generator=gen).float() * 0.5
    q = torch.quantize_per_tensor(vals, 0.5, 3, torch.quint8)
    if layout == "channels_last":
        q = q.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        q = q[:, :, ::2]
    out = LutEdit(C).int8_path(q, 0.5, 3)
    assert out.shape == q.shape and out.q_zero_point() == 3
    assert out.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")
    assert torch.equal(out.int_repr().long() - 3, map_codes(q.int_repr().long() - 3, C))


codes_st = st.integers(-300, 300)


@pytest.mark.parametrize("kernel", KERNELS)
@settings(max_examples=200, deadline=None)
@given(t1=codes_st, v1=codes_st, t2=codes_st, v2=codes_st, tmax=codes_st, zero_point=st.integers(0, 255))
def test_kernel_is_bit_exact_for_every_code_and_any_map(kernel, t1, v1, t2, v2, tmax, zero_point):
    c = LayerCodes(t1, v1, t2, v2, tmax)
    q = np.arange(256, dtype=np.uint8)
    out = np.empty_like(q)
    apply_maps(q, out, map_rows([c]), zero_point, kernel)
    assert out.tolist() == quint8_table(c, zero_point).tolist()


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_blocks_get_their_own_map_and_none_is_the_identity(kernel):
    maps = [C, None, LayerCodes(2, 5, 8, 20, 30)]
    gen = torch.Generator().manual_seed(1)
    vals = torch.randint(0, 50, (3 * 4, 7), generator=gen).float()
    q = torch.quantize_per_tensor(vals, 1.0, 2, torch.quint8)
    out = int8_maps(q, map_rows(maps), 2, kernel)
    for k, c in enumerate(maps):
        block = q.int_repr()[4 * k: 4 * (k + 1)].long() - 2
        expect = block if c is None else map_codes(block, c)
        assert torch.equal(out.int_repr()[4 * k: 4 * (k + 1)].long() - 2, expect)


def test_kernel_refuses_blocks_that_do_not_divide_the_batch():
    q = np.zeros(10, dtype=np.uint8)
    with pytest.raises(ValueError, match="equal blocks"):
        apply_maps(q, q.copy(), map_rows([C, C, C]), 0)


def test_float_maps_equal_the_float_path_block_by_block():
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 40, (6, 3, 2, 2), generator=gen).float() * 0.25 + 0.01  # off the grid: None keeps x
    maps = [C, LayerCodes(2, 5, 8, 20, 30), None]
    out = float_maps(x, 0.25, map_rows(maps))
    for k, c in enumerate(maps):
        expect = x[2 * k: 2 * (k + 1)] if c is None else LutEdit(c).float_path(x[2 * k: 2 * (k + 1)], 0.25)
        assert torch.equal(out[2 * k: 2 * (k + 1)], expect)


def test_int8_path_reads_the_input_in_place_and_leaves_it_unchanged():
    vals = torch.arange(0, 40, dtype=torch.float32)
    q = torch.quantize_per_tensor(vals, 1.0, 0, torch.quint8)
    before = q.int_repr().clone()
    out = LutEdit(C).int8_path(q, 1.0, 0)
    assert torch.equal(q.int_repr(), before) and out.data_ptr() != q.data_ptr()


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "linear"])
def test_int8_values_are_exactly_dequantize_and_its_square(layout):
    gen = torch.Generator().manual_seed(3)
    shape = (3, 7) if layout == "linear" else (2, 5, 3, 4)
    q = torch.quantize_per_tensor(torch.rand(shape, generator=gen) * 9, 0.0371, 4, torch.quint8)
    if layout == "channels_last":
        q = q.contiguous(memory_format=torch.channels_last)
    assert torch.equal(int8_values(q), q.dequantize()) and int8_values(q).stride() == q.dequantize().stride()
    assert torch.equal(int8_values(q, squared=True), q.dequantize().pow(2))
