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


def repeat_kv_heads(x, heads):
    """``[B, S, G, K]`` keys or values as float64 ``[B, S, H, K]``: query head h reads
    key/value head ``h // (H / G)`` (GQA, Ainslie et al. 2023)."""
    x = np.asarray(x, np.float64)
    return np.repeat(x, heads // x.shape[2], axis=2)


def sum_kv_heads(x, kv_heads):
    """``[B, S, H, K]`` per query head -> ``[B, S, G, K]``, summed over the query heads that
    share a key/value head (the transpose of :func:`repeat_kv_heads`)."""
    heads = x.shape[2]
    return x.reshape(x.shape[:2] + (kv_heads, heads // kv_heads) + x.shape[3:]).sum(3)


def reference_weights(q, k, *, bias=None, allowed=None, scale=None, logit_factor=None):
    """``softmax_j(tau_i (q_i.k_j * scale + bias_ij))`` over the allowed keys, float64
    ``[B, H, L, S]``; a row with no allowed key is zeros.

    q [B, L, H, K], k [B, S, G, K]; bias and allowed broadcastable to [B, H, L, S];
    ``logit_factor`` tau ``[B, L]`` (a temperature), None for 1.
    """
    q = np.asarray(q, np.float64)
    k = repeat_kv_heads(k, q.shape[2])
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    logits = np.einsum("blhk,bshk->bhls", q, k) * scale
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    if logit_factor is not None:
        logits = logits * np.asarray(logit_factor, np.float64)[:, None, :, None]
    if allowed is None:
        allowed = np.ones(logits.shape, bool)
    allowed = np.broadcast_to(allowed, logits.shape)
    logits = np.where(allowed, logits, -np.inf)
    row_max = np.max(logits, axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)
    weights = np.where(allowed, np.exp(logits - row_max), 0.0)
    total = weights.sum(-1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


def reference_attention(q, k, v, *, bias=None, allowed=None, scale=None, logit_factor=None):
    """softmax(tau (q k^T * scale + bias)) v in float64, key/value heads repeated for GQA.

    q [B, L, H, K], k and v [B, S, G, K], bias and allowed broadcastable to [B, H, L, S].
    A query row with no allowed key returns zeros.
    """
    weights = reference_weights(
        q, k, bias=bias, allowed=allowed, scale=scale, logit_factor=logit_factor
    )
    return np.einsum("bhls,bshk->blhk", weights, repeat_kv_heads(v, weights.shape[1]))


def reference_attention_vjp(
    q, k, v, d_out, *, bias=None, allowed=None, scale=None, logit_factor=None
):
    """The gradients of ``sum(d_out * reference_attention(...))`` in float64, from the
    softmax's derivative written out over the full map (no autodiff).

    With ``z = q k^T * scale + bias``, ``p = softmax(tau z)`` and ``o = p v``:
    ``dv = p^T do``, ``dp = do v^T``, ``dz = tau p (dp - rowsum(p dp))``,
    ``dq = scale dz k``, ``dk = scale dz^T q``; key and value gradients are summed over the
    query heads that share a key/value head.

    Returns:
      ``{"q": [B, L, H, K], "k": [B, S, G, K], "v": [B, S, G, K], "bias": dz [B, H, L, S]}``.
    """
    heads, kv_heads = np.shape(q)[2], np.shape(k)[2]
    weights = reference_weights(
        q, k, bias=bias, allowed=allowed, scale=scale, logit_factor=logit_factor
    )
    scale = np.shape(q)[-1] ** -0.5 if scale is None else scale
    d_out = np.asarray(d_out, np.float64)
    v_heads = repeat_kv_heads(v, heads)
    d_weights = np.einsum("blhk,bshk->bhls", d_out, v_heads)
    d_z = weights * (d_weights - np.sum(weights * d_weights, axis=-1, keepdims=True))
    if logit_factor is not None:
        d_z = d_z * np.asarray(logit_factor, np.float64)[:, None, :, None]
    d_k = np.einsum("bhls,blhk->bshk", d_z, np.asarray(q, np.float64)) * scale
    return {
        "q": np.einsum("bhls,bshk->blhk", d_z, repeat_kv_heads(k, heads)) * scale,
        "k": sum_kv_heads(d_k, kv_heads),
        "v": sum_kv_heads(np.einsum("bhls,blhk->bshk", weights, d_out), kv_heads),
        "bias": d_z,
    }


# --- Contextual encodings ------------------------------------------------------------------


def _relative_rows(q_positions, k_positions, clip):
    distance = np.asarray(k_positions)[:, None, :] - np.asarray(q_positions)[:, :, None]
    return np.clip(distance, -clip, clip) + clip  # [B, L, S]


def reference_shaw_logits(q, k, key_table, q_positions, k_positions, clip):
    """Shaw et al. 2018, Eq. 5: ``(q_i.k_j + q_i.a^K_ij) / sqrt(d)`` with the relative
    vector ``a^K_ij = w^K_clip(j - i, k)`` of every pair, float64 ``[B, H, L, S]``."""
    q = np.asarray(q, np.float64)
    k = repeat_kv_heads(k, q.shape[2])
    a_key = np.asarray(key_table, np.float64)[_relative_rows(q_positions, k_positions, clip)]
    logits = np.einsum("blhk,bshk->bhls", q, k) + np.einsum("blhk,blsk->bhls", q, a_key)
    return logits / np.sqrt(q.shape[-1])


def reference_shaw_values(weights, value_table, q_positions, k_positions, clip):
    """Shaw et al. 2018, Eq. 3's relative term ``sum_j alpha_ij a^V_ij``, ``[B, L, H, K]``."""
    a_value = np.asarray(value_table, np.float64)[_relative_rows(q_positions, k_positions, clip)]
    return np.einsum("bhls,blsk->blhk", np.asarray(weights, np.float64), a_value)


def reference_transformer_xl_scores(q, k, u, v_bias, w_r, q_positions, k_positions):
    """score[i, j] = ((q_i + u).k_j + (q_i + v).(W_R r(i - j))) / sqrt(d), r per pair."""
    q = np.asarray(q, np.float64)
    k = repeat_kv_heads(k, q.shape[2])
    u, v_bias, w_r = (np.asarray(a, np.float64) for a in (u, v_bias, w_r))
    distance = np.asarray(q_positions)[:, :, None] - np.asarray(k_positions)[:, None, :]
    r = reference_sinusoidal(distance, w_r.shape[0])  # [B, L, S, D_r]
    projected = np.einsum("blsd,dhk->blshk", r, w_r)
    scores = np.einsum("blhk,bshk->bhls", q + u, k) + np.einsum(
        "blhk,blshk->bhls", q + v_bias, projected
    )
    return scores / np.sqrt(q.shape[-1])


def reference_cope_logits(q, k, embeddings, num_positions, allowed):
    """CoPE (Golovneva et al. 2024): gates, positions as explicit sums over the tokens from
    j on (``t = j..i`` under a causal mask: gates are zero where not allowed),
    interpolated embedding *vectors*, float64 ``[B, H, L, S]``."""
    q = np.asarray(q, np.float64)
    k = repeat_kv_heads(k, q.shape[2])
    embeddings = np.asarray(embeddings, np.float64)
    scale = 1.0 / np.sqrt(q.shape[-1])
    content = np.einsum("blhk,bshk->bhls", q, k)
    allowed = np.broadcast_to(allowed, content.shape)
    gates = np.where(allowed, 1.0 / (1.0 + np.exp(-content * scale)), 0.0)
    batch, heads, q_len, k_len = content.shape
    logits = np.zeros_like(content)
    for b, h, i, j in np.ndindex(batch, heads, q_len, k_len):
        position = min(gates[b, h, i, j:].sum(), num_positions - 1)
        low, high = int(np.floor(position)), int(np.ceil(position))
        vector = (position - low) * embeddings[high] + (1 - position + low) * embeddings[low]
        logits[b, h, i, j] = (content[b, h, i, j] + q[b, i, h] @ vector) * scale
    return logits
