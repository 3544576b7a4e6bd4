"""Generate sim/default_centerline.csv: the project's own small default track (CC0, ours).

A smooth closed curve r(theta) = R0 + a cos(2 theta) + b sin(3 theta), resampled every ~0.3 m,
2.2 m wide, in the f1tenth_racetracks centerline format.
"""

from pathlib import Path

import numpy as np

R0, A, B, SPACING_M, HALF_WIDTH_M = 9.0, 2.2, 1.2, 0.3, 1.1


def main() -> None:
    theta = np.linspace(0.0, 2.0 * np.pi, 20000, endpoint=False)
    r = R0 + A * np.cos(2 * theta) + B * np.sin(3 * theta)
    xy = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    seg = np.hypot(*np.diff(np.vstack([xy, xy[:1]]), axis=0).T)
    s = np.concatenate(([0.0], np.cumsum(seg)))
    n = int(round(s[-1] / SPACING_M))
    s_new = np.linspace(0.0, s[-1], n, endpoint=False)
    closed = np.vstack([xy, xy[:1]])
    pts = np.stack([np.interp(s_new, s, closed[:, 0]), np.interp(s_new, s, closed[:, 1])], axis=1)
    pts -= pts[0]  # start at the origin, like the f1tenth tracks
    out = Path(__file__).resolve().parent.parent / "sim" / "default_centerline.csv"
    with out.open("w") as f:
        f.write("# x_m, y_m, w_tr_right_m, w_tr_left_m\n")
        for x, y in pts:
            f.write(f"{x:.6f}, {y:.6f}, {HALF_WIDTH_M}, {HALF_WIDTH_M}\n")
    print(f"wrote {out}: {n} points, {s[-1]:.1f} m")


if __name__ == "__main__":
    main()
