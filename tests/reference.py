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


def reference_attention(q, k, v, *, bias=None, allowed=None, scale=None):
    """softmax(q k^T * scale + bias) v in float64, key/value heads repeated for GQA.

    q [B, L, H, K], k and v [B, S, G, K], bias and allowed broadcastable to [B, H, L, S].
    A query row with no allowed key returns zeros.
    """
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    heads, kv_heads = q.shape[2], k.shape[2]
    k = np.repeat(k, heads // kv_heads, axis=2)
    v = np.repeat(v, heads // kv_heads, axis=2)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("blhk,bshk->bhls", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    if allowed is None:
        allowed = np.ones(logits.shape, bool)
    allowed = np.broadcast_to(allowed, logits.shape)
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(allowed, np.exp(logits - row_max), 0.0)
    total = weights.sum(-1, keepdims=True)
    weights = weights / np.where(total > 0, total, 1.0)
    return np.einsum("bhls,bshk->blhk", weights, v)
