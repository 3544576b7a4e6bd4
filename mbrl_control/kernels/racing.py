"""The O(1) track lookup of :class:`~mbrl_control.problem.track_context.TrackTable` in the kernels.

Scalar device functions: they compile into the vectorised Numba CPU loops (the table reads
become AVX-512 gathers) and into CUDA threads; the generated MPPI kernels
(:mod:`.mppi_generated`) call them for the features of a track context. Tested equal to
:meth:`TrackTable.lookup_torch`.
"""

from __future__ import annotations

import numpy as np

from mbrl_control.kernels.fastmath import ZERO, device_function, select
from mbrl_control.problem.track_context import (SEG_AX, SEG_AY, SEG_DX, SEG_DY, SEG_LEN, SEG_S0, SEG_WL, SEG_WL_SLOPE,
                                                SEG_WR, SEG_WR_SLOPE)


@device_function
def load_track_table(table):
    """(origin x, origin y, 1/cell, nx, ny, track length) from ``TrackTable.scalars``."""
    return table[0], table[1], table[2], np.int64(table[3]), np.int64(table[4]), table[5]


@device_function
def segment_candidate(x, y, segs, row):
    """Projection on one padded segment row: (squared distance to the foot point, along, cross)."""
    rx = x - segs[row, SEG_AX]
    ry = y - segs[row, SEG_AY]
    dx = segs[row, SEG_DX]
    dy = segs[row, SEG_DY]
    along = min(max(rx * dx + ry * dy, ZERO), segs[row, SEG_LEN])
    fx = rx - along * dx
    fy = ry - along * dy
    return fx * fx + fy * fy, along, dx * ry - dy * rx


@device_function
def track_cell(x, y, cells, ox, oy, inv_cell, nx, ny):
    """First candidate segment row of a point: the nearest segment stored in its grid cell."""
    ix = min(max(np.int64(np.floor((x - ox) * inv_cell)), 0), nx - 1)
    iy = min(max(np.int64(np.floor((y - oy) * inv_cell)), 0), ny - 1)
    return np.int64(cells[iy, ix])


@device_function(inline="always")
def nearest_candidate(a, b, c, first):
    """(distance, along, signed lateral, row) of the nearest of the candidates in rows first..first+2."""
    take_b = b[0] < a[0]
    d_ab = select(take_b, b[0], a[0])
    take_c = c[0] < d_ab
    dist = np.sqrt(select(take_c, c[0], d_ab))
    along = select(take_c, c[1], select(take_b, b[1], a[1]))
    cross = select(take_c, c[2], select(take_b, b[2], a[2]))
    row = first + select(take_c, np.int64(2), select(take_b, np.int64(1), np.int64(0)))
    lateral = select(cross >= ZERO, dist, -dist)  # signed distance to the foot point (Track.project)
    return lateral, along, row


@device_function
def segment_fields(segs, row, along):
    """(progress, width left, width right) at ``along`` on a padded segment row."""
    return (segs[row, SEG_S0] + along, segs[row, SEG_WL] + segs[row, SEG_WL_SLOPE] * along,
            segs[row, SEG_WR] + segs[row, SEG_WR_SLOPE] * along)


@device_function
def track_lookup(x, y, cells, segs, ox, oy, inv_cell, nx, ny):
    """(progress, lateral, width left, width right) of a point: one grid cell, three candidate segments.

    Only the distance fields are read for all three candidates; progress and widths only for the
    nearest. (Vectorised CPU loops spell these calls out: LLVM does not inline this wrapper there.)
    """
    first = track_cell(x, y, cells, ox, oy, inv_cell, nx, ny)
    lateral, along, row = nearest_candidate(segment_candidate(x, y, segs, first),
                                            segment_candidate(x, y, segs, first + 1),
                                            segment_candidate(x, y, segs, first + 2), first)
    progress, wl, wr = segment_fields(segs, row, along)
    return progress, lateral, wl, wr
