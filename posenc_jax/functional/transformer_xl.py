"""Transformer-XL relative position scores (Dai et al., 2019).

The attention score of query i and key j is, before the ``1 / sqrt(d)`` scaling,

  A_ij = q_i.k_j + u.k_j + (q_i + v).(W_R r_{i-j})            (Section 3.3, terms a-d)

with ``r`` the fixed sinusoid of the distance ``i - j``, ``u`` and ``v`` learned per head,
and ``W_R`` a learned projection of the sinusoid to every head's dimension.

Instead of building ``r_{i-j}`` for every pair (an ``[L, S, D_r]`` array) and applying the
"relative shift", the sinusoid of a difference is split with the angle-difference
identities ``sin(a - b) = sin a cos b - cos a sin b`` and
``cos(a - b) = cos a cos b + sin a sin b``: the relative term becomes a product of a query
feature of position i and a key feature of position j, one ``[L, 2F] x [2F, S]`` matmul
per head, valid for arbitrary (non-contiguous, randomized, offset) positions.
"""

import jax.numpy as jnp

from posenc_jax.functional.sinusoidal import sinusoid_cos_sin, sinusoidal_inv_freq
from posenc_jax.typing import Array


def transformer_xl_logits(
    q: Array,
    k: Array,
    content_bias: Array,
    position_bias: Array,
    relative_kernel: Array,
    q_positions: Array,
    k_positions: Array,
    *,
    base: float = 10000.0,
) -> Array:
    """Terms (b), (c) and (d) of the Transformer-XL score, unscaled, for every pair.

    ``u.k_j + (q_i + v).(W_R r_{i-j})``; the content term ``q_i.k_j`` (a) is the ordinary
    attention logit and is not included. ``r_t`` is the sinusoid of
    :func:`posenc_jax.functional.sinusoidal` (``r[2f] = sin(t w_f)``,
    ``r[2f + 1] = cos(t w_f)``), of width ``D_r = relative_kernel.shape[0]``.

    Args:
      q: queries ``[B, L, H, K]``.
      k: keys ``[B, S, H, K]`` (one key head per query head).
      content_bias: u ``[H, K]``.
      position_bias: v ``[H, K]``.
      relative_kernel: W_R ``[D_r, H, K]`` (D_r even), mapping ``r`` to every head.
      q_positions: integer ``[B, L]`` (i). Their sines and cosines come from fixed-point
        angles (:func:`posenc_jax.functional.sinusoidal`), so a window far into a long
        document scores as one at its start: a float32 product ``i w`` is off by up to
        0.03 rad at 10^6.
      k_positions: integer ``[B, S]`` (j).
      base: sinusoid wavelength base.

    Returns:
      float32 ``[B, H, L, S]``.

    References:
      Dai, Yang, Yang, Carbonell, Le & Salakhutdinov, "Transformer-XL: Attentive Language
      Models Beyond a Fixed-Length Context", ACL 2019, Section 3.3.
    """
    num_heads, head_dim = q.shape[2], q.shape[3]
    for name, array in (("content_bias u", content_bias), ("position_bias v", position_bias)):
        if array.shape != (num_heads, head_dim):
            raise ValueError(
                f"Transformer-XL {name} has shape {array.shape}; expected [H, K] = "
                f"{[num_heads, head_dim]}."
            )
    rel_dim = relative_kernel.shape[0]
    if relative_kernel.shape[1:] != (num_heads, head_dim):
        raise ValueError(
            f"Transformer-XL relative_kernel W_R has shape {relative_kernel.shape}; expected "
            f"[D_r, H, K] = [D_r, {num_heads}, {head_dim}]."
        )
    inv_freq = sinusoidal_inv_freq(rel_dim, base=base)  # raises for an odd D_r

    content = jnp.einsum("HK,BSHK->BHS", content_bias, k, preferred_element_type=jnp.float32)
    # (q_i + v) W_R, split into the coefficients of sin(t w_f) and cos(t w_f).
    projected = jnp.einsum(
        "BLHK,DHK->BLHD",
        q.astype(jnp.float32) + position_bias.astype(jnp.float32)[None, None],
        relative_kernel.astype(jnp.float32),
    )
    coeff_sin, coeff_cos = projected[..., 0::2], projected[..., 1::2]  # [B, L, H, F]
    cos_i, sin_i = sinusoid_cos_sin(q_positions[:, :, None], inv_freq)  # [B, L, 1, F]
    cos_j, sin_j = sinusoid_cos_sin(k_positions, inv_freq)  # [B, S, F]
    # c_s sin(i - j) + c_c cos(i - j)
    #   = cos j (c_s sin i + c_c cos i) + sin j (c_c sin i - c_s cos i)
    q_features = jnp.concatenate(
        [coeff_sin * sin_i + coeff_cos * cos_i, coeff_cos * sin_i - coeff_sin * cos_i], axis=-1
    )
    k_features = jnp.concatenate([cos_j, sin_j], axis=-1)
    relative = jnp.einsum("BLHF,BSF->BHLS", q_features, k_features)
    return content[:, :, None, :] + relative
