"""Independent numpy float64 references written from the papers' formulas."""

import numpy as np


def reference_sinusoidal(positions, dim, base=10000.0):
    positions = np.asarray(positions, np.float64)
    out = np.zeros(positions.shape + (dim,))
    for t in range(dim // 2):
        omega = base ** (-2.0 * t / dim)
        out[..., 2 * t] = np.sin(positions * omega)
        out[..., 2 * t + 1] = np.cos(positions * omega)
    return out
