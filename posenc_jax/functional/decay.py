"""Content-dependent decays of attention: forget gates (FoX) and Cable's token biases.

Both add to the logit of query i and key j the sum of per-token log decays ``a_s`` of the
tokens between them, ``c_i - c_j = sum_{j < s <= i} a_s`` with ``c_t = sum_{s <= t} a_s``,
computed from the layer's input ``x_t`` (so it is a position term that reads content):

* the Forgetting Transformer's forget gate, ``a_t = log f_t = log sigmoid(w . x_t + b)``
  per head (Lin et al., ICLR 2025);
* Cable's ``a_t = -softplus(W x_t)`` per head (Veisi et al., arXiv 2503.08067).

Since ``log sigmoid(-z) = -softplus(z)``, Cable with ``W`` is the forget gate with
``w = -W`` and ``b = 0``. Because the term is ``c_i - c_j``, attention needs only the
per-token ``c`` (a separable bias), never the ``[L, S]`` map.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.typing import Array


def log_forget_gate(x: Array, kernel: Array | None, bias: Array | None = None) -> Array:
    """The Forgetting Transformer's per-head ``log f_t = log sigmoid(w_h . x_t + b_h)``.

    Args:
      x: the layer's input ``[B, L, D]``.
      kernel: ``w [D, H]``, or None for a data-independent gate ``sigmoid(b_h)``.
      bias: ``b [H]``, or None for none (one of kernel and bias must be given).

    Returns:
      float32 ``[B, H, L]``, each entry ``<= 0``.

    References:
      Lin, Nikishin, He & Courville, "Forgetting Transformer: Softmax Attention with a
      Forget Gate", ICLR 2025 (arXiv 2503.02130), Eq. 4: ``f_t = sigmoid(w_f^T x_t + b_f)``.
    """
    if kernel is None and bias is None:
        raise ValueError("a forget gate needs a kernel w [D, H], a bias b [H], or both.")
    if kernel is None:
        batch, length = x.shape[:2]
        logits = jnp.zeros((batch, jnp.shape(bias)[0], length), jnp.float32)
    else:
        logits = _per_head(x, kernel)
    if bias is not None:
        logits = logits + jnp.asarray(bias, jnp.float32)[None, :, None]
    return jax.nn.log_sigmoid(logits)


def cable_log_decay(x: Array, kernel: Array) -> Array:
    """Cable's per-head token bias ``-softplus(W_h x_t)``.

    Args:
      x: the layer's input ``[B, L, D]``.
      kernel: ``W [D, H]``.

    Returns:
      float32 ``[B, H, L]``, each entry ``<= 0``.

    References:
      Veisi, Amirzadeh & Mansourian, "Context-aware Biases for Length Extrapolation",
      arXiv 2503.08067, 2025: ``b_t = sum_{s <= t} -softplus(W x_s)``, bias ``b_i - b_j``.
    """
    return -jax.nn.softplus(_per_head(x, kernel))


def cumulative_log_decay(
    log_decay: Array, valid: Array | None = None, start: Array | None = None
) -> Array:
    """``c_t = start + sum_{s <= t} a_s`` along the sequence, padding contributing nothing.

    Args:
      log_decay: ``a [B, H, L]`` in sequence order.
      valid: bool ``[B, L]``, False on padding (its ``a`` counts as 0, so left padding
        shifts no real token's ``c`` and right padding changes none); None: all real.
      start: ``[B, H]``, the sum over the tokens before these (a decoding cache's); None: 0.

    Returns:
      float32 ``[B, H, L]``.
    """
    log_decay = jnp.asarray(log_decay, jnp.float32)
    if valid is not None:
        log_decay = jnp.where(valid[:, None, :], log_decay, 0.0)
    c = jnp.cumsum(log_decay, axis=-1)
    return c if start is None else c + start[..., None]


def decay_time_bias(num_heads: int, decay_time_min: float, decay_time_max: float) -> Array:
    """The official FoX gate-bias initialization: per-head decay times ``T_h`` spaced
    evenly in ``log T`` between ``T_min`` and ``T_max``, and ``b_h`` with
    ``T_h = -1 / log sigmoid(b_h)``, i.e. ``b_h = -log(exp(1 / T_h) - 1)``.

    A gate of constant value ``sigmoid(b_h)`` multiplies the attention to a key t tokens
    back by ``exp(-t / T_h)``.

    Args:
      num_heads: H.
      decay_time_min, decay_time_max: ``T_min <= T_max``, positive.

    Returns:
      float32 ``[H]`` (computed in float64).

    References:
      Lin et al., ICLR 2025, Appendix (data-independent forget gate initialization);
      official code ``zhixuan-lin/forgetting-transformer`` (``fgate_bias_init``,
      ``decay_time_min`` / ``decay_time_max``).
    """
    if not (0 < decay_time_min <= decay_time_max and math.isfinite(decay_time_max)):
        raise ValueError(
            f"decay times must satisfy 0 < decay_time_min <= decay_time_max < inf, got "
            f"({decay_time_min!r}, {decay_time_max!r})."
        )
    times = np.exp(np.linspace(math.log(decay_time_min), math.log(decay_time_max), num_heads))
    return jnp.asarray(-np.log(np.expm1(1.0 / times)), jnp.float32)


def _per_head(x: Array, kernel: Array) -> Array:
    """``x [B, L, D] . kernel [D, H]`` in float32, as ``[B, H, L]``."""
    return jnp.einsum(
        "BLD,DH->BHL",
        x.astype(jnp.float32),
        jnp.asarray(kernel, jnp.float32),
        precision=jax.lax.Precision.HIGHEST,
    )
