"""Mapping arbitrary numbers onto legal codes: clamping (projection) and unit-interval decoding."""

from __future__ import annotations

import math

from triseg.approx.config import LayerCodes, t1_range, t2_range, v1_range, v2_range


def clamp_to(r: range, value: float) -> int:
    """The integer of ``r`` nearest to ``value`` (values outside the range go to its ends)."""
    return int(min(max(round(value), r.start), r.stop - 1))


def project(t1: float, v1: float, t2: float, v2: float, tmax: int) -> LayerCodes:
    """Clamp codes in rule order (t1, then t2 given t1, then v1, v2) so the result is legal."""
    t1i = clamp_to(t1_range(tmax), t1)
    t2i = clamp_to(t2_range(t1i, tmax), t2)
    return LayerCodes(t1i, clamp_to(v1_range(t1i, t2i), v1), t2i, clamp_to(v2_range(t2i, tmax), v2), tmax)


DECODE_FIELDS = ("t1", "gap", "v1", "v2")  # the fractions :func:`decode` takes, in its argument order


def pick(r: range, u: float) -> int:
    """The element of ``r`` at fraction ``u`` in [0, 1] (equal-width bins, so uniform u is uniform)."""
    return r.start + min(len(r) - 1, max(0, math.floor(u * len(r))))


def decode(u_t1: float, u_gap: float, u_v1: float, u_v2: float, tmax: int) -> LayerCodes:
    """A legal map from four fractions: t1 in its range, t2 in [t1+4, tmax-4], v1 and v2 within their segments."""
    t1 = pick(t1_range(tmax), u_t1)
    t2 = pick(t2_range(t1, tmax), u_gap)
    return LayerCodes(t1, pick(v1_range(t1, t2), u_v1), t2, pick(v2_range(t2, tmax), u_v2), tmax)
