"""Which points of the map a lasso or a box encloses (pure functions over the layout)."""
from __future__ import annotations

import numpy as np


def in_polygon(xy: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Mask of the points of ``xy`` (n × 2) inside ``polygon`` (m × 2, closed or not), by the
    even-odd rule: a lasso drawn across itself leaves its doubly enclosed part out, as Bokeh's
    own lasso does."""
    poly = np.asarray(polygon, float)
    if len(poly) < 3:
        return np.zeros(len(xy), bool)
    x, y = xy[:, 0:1], xy[:, 1:2]
    x0, y0 = poly[:, 0], poly[:, 1]
    x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
    crosses = (y0 > y) != (y1 > y)  # the edge spans the point's height
    with np.errstate(divide="ignore", invalid="ignore"):
        at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return ((crosses & (x < at)).sum(axis=1) % 2).astype(bool)


def in_box(xy: np.ndarray, bounds) -> np.ndarray:
    """Mask of the points of ``xy`` inside ``(left, bottom, right, top)``."""
    left, bottom, right, top = bounds
    return (xy[:, 0] >= min(left, right)) & (xy[:, 0] <= max(left, right)) & \
           (xy[:, 1] >= min(bottom, top)) & (xy[:, 1] <= max(bottom, top))
