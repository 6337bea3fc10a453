"""The lookup table: map semantics at every boundary, the quint8 table, both paths of the edit, the layout."""

from __future__ import annotations

import pytest
import torch

from triseg.approx.config import LayerCodes
from triseg.approx.lut import LutEdit, map_codes, quint8_table

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
