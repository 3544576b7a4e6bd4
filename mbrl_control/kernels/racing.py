"""Kernel mirror of the racing cost and its O(1) track lookup (:mod:`mbrl_control.control.costs`).

Scalar device functions: they compile into the vectorised Numba CPU loops (the table reads
become AVX-512 gathers) and into CUDA threads. Tested equal to the torch reference.
"""

from __future__ import annotations

import numpy as np

from mbrl_control.control.costs import (C_ACCEL_RATE, C_ALAT, C_ALAT_MAX, C_CRASH, C_HARD_MARGIN, C_LATERAL,
                                        C_PROGRESS, C_REVERSE, C_SLIP, C_SOFT, C_SOFT_MARGIN, C_SPEED, C_STEER_RATE, C_VMAX,
                                        SEG_AX, SEG_AY, SEG_DX, SEG_DY, SEG_LEN, SEG_S0, SEG_WL, SEG_WL_SLOPE, SEG_WR, SEG_WR_SLOPE)
from mbrl_control.kernels.fastmath import HALF, ONE, ZERO, device_function, select

F32 = np.float32


@device_function
def load_cost_weights(w):
    """The cost weight array as a tuple of scalars (see ``RacingCostConfig.vector``)."""
    return (w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7], w[8], w[9], w[10], w[11], w[12], w[13])


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


@device_function
def wrap_progress(ds, length):
    """Arclength difference wrapped to (-L/2, L/2]."""
    half = HALF * length
    ds = ds - select(ds > half, length, ZERO)
    return ds + select(ds < -half, length, ZERO)


@device_function(inline="always")
def racing_stage_cost(progress, progress_prev, lateral, wl, wr, v, yaw_rate, slip, du_steer, du_accel, crashed,
                      length, cw):
    """(stage cost, crashed after this step) of the racing cost (``crashed`` is 0 or 1, float32)."""
    out_left = lateral - (wl - cw[C_HARD_MARGIN])
    out_right = -lateral - (wr - cw[C_HARD_MARGIN])
    crashed = select((out_left > ZERO) | (out_right > ZERO), ONE, crashed)
    ds = wrap_progress(progress - progress_prev, length)
    soft = max(lateral - (wl - cw[C_SOFT_MARGIN]), ZERO) + max(-lateral - (wr - cw[C_SOFT_MARGIN]), ZERO)
    over = max(v - cw[C_VMAX], ZERO)
    rev = min(v, ZERO)
    alat = max(abs(v * yaw_rate) - cw[C_ALAT_MAX], ZERO)
    cost = (-cw[C_PROGRESS] * ds * (ONE - crashed) + cw[C_SOFT] * soft * soft + cw[C_CRASH] * crashed
            + cw[C_SPEED] * over * over + cw[C_REVERSE] * rev * rev + cw[C_ALAT] * alat * alat
            + cw[C_STEER_RATE] * du_steer * du_steer + cw[C_ACCEL_RATE] * du_accel * du_accel
            + cw[C_SLIP] * slip * slip + cw[C_LATERAL] * lateral * lateral)
    return cost, crashed
