"""The shape of a relative bias: ``b_h(i, j)`` against the distance ``i - j``.

Relative-bias encodings (ALiBi, T5, KERPLE, Sandwich, FIRE) add ``b_h(i, j)`` to the logits
of head h. Their whole positional behaviour is this function of distance: a straight line
per head for ALiBi, a learned step function over log-spaced buckets for T5, a power or log
kernel for KERPLE, a rippling sinusoid dot product for Sandwich, an MLP of a normalized log
distance for FIRE. :func:`bias_profile` evaluates it through the encoding's own ``bias_fn``
hook, at initialization or with trained parameters.

A content-dependent decay (the Forgetting Transformer's forget gate, Cable) has no such
profile: its bias ``c_i - c_j`` depends on the tokens between j and i, so it differs from
example to example. :func:`decay_bias_map` gives one example's map from the log decays the
encoding's ``decay`` hook computed (recorded by
:func:`~posenc_jax.analysis.attention_weights`).
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.encodings.base import PositionalEncoding


def bias_profile(
    encoding: PositionalEncoding,
    distances: Sequence[int],
    *,
    num_heads: int,
    causal: bool = True,
    query_position: int | None = None,
    params=None,
    seed: int = 0,
) -> np.ndarray:
    """``b_h(i, i - k)`` for a query at position i and each distance k, for every head.

    Args:
      encoding: an encoding with a ``bias_fn`` hook, e.g.
        ``posenc_jax.encodings.get("alibi")``.
      distances: distances k = i - j (non-negative for a causal profile; negative k puts
        the key after the query).
      num_heads: H.
      causal: whether the bias is built for causal attention (T5's buckets are one-sided
        then).
      query_position: i; default the largest distance, so that every key position
        ``i - k`` is >= 0. Matters for FIRE, whose normalizer depends on i.
      params: the encoding's parameters (e.g. from a trained layer); None initializes
        them with ``seed``.
      seed: initialization seed when ``params`` is None.

    Returns:
      float64 ``[H, len(distances)]``.

    Raises:
      ValueError: if the encoding has no bias, or a key position ``i - k`` would be
        negative.

    References:
      Press et al., "Train Short, Test Long" (ALiBi), ICLR 2022; Raffel et al., "Exploring
      the Limits of Transfer Learning with a Unified Text-to-Text Transformer" (T5), JMLR
      2020; Chi et al., "KERPLE", NeurIPS 2022; Chi et al., "Dissecting Transformer Length
      Extrapolation via the Lens of Receptive Field Analysis" (Sandwich), ACL 2023; Li et
      al., "Functional Interpolation for Relative Positions Improves Long Context
      Transformers" (FIRE), ICLR 2024.
    """
    distances = np.asarray(distances)
    if distances.ndim != 1 or not np.issubdtype(distances.dtype, np.integer):
        raise ValueError(f"distances must be a 1-D list of integers, got {distances!r}.")
    if query_position is None:
        query_position = max(int(np.max(distances)), 0)
    k_positions = query_position - distances
    if np.any(k_positions < 0):
        raise ValueError(
            f"query_position={query_position} minus distance {int(np.max(distances))} is a "
            "negative key position; give a query_position >= the largest distance."
        )
    hook = {"num_heads": num_heads, "causal": causal}
    q_positions = jnp.asarray([query_position], jnp.int32)
    k_positions = jnp.asarray(k_positions, jnp.int32)

    def bias(key, params, q_positions, k_positions):
        if params is None:
            variables = encoding.init(key, "bias_fn", **hook)
        else:
            variables = {"params": params}
        bias_fn = encoding.apply(variables, "bias_fn", **hook)
        if bias_fn is None:
            raise ValueError(
                f"encoding {type(encoding).__name__} adds no bias to the logits (its bias_fn "
                "hook returns None); choose a relative-bias encoding."
            )
        return bias_fn(q_positions, k_positions)[:, 0, :]  # [H, 1, K] -> [H, K]

    # Compiled as one program (op-by-op dispatch of an MLP bias is slow); the positions
    # are arguments, so they are never baked in as constants.
    profile = jax.jit(bias)(jax.random.key(seed), params, q_positions, k_positions)
    return np.asarray(profile, np.float64)


def decay_bias_map(log_decay, valid=None) -> np.ndarray:
    """The bias ``c_i - c_j = sum_{j < s <= i} a_s`` of a decay for every causal pair.

    Args:
      log_decay: the ``decay`` hook's per-token log decays ``a [B, H, L]``.
      valid: bool ``[B, L]``, False on padding (adds nothing to the sums), or None.

    Returns:
      float64 ``[B, H, L, L]``: ``c_i - c_j`` for keys ``j <= i``, NaN for keys after the
      query (where the causal bias is not defined).

    References:
      Lin et al., "Forgetting Transformer: Softmax Attention with a Forget Gate", ICLR
      2025; Veisi et al., "Context-aware Biases for Length Extrapolation", arXiv
      2503.08067, 2025.
    """
    log_decay = np.asarray(log_decay, np.float64)
    if valid is not None:
        log_decay = np.where(np.asarray(valid)[:, None, :], log_decay, 0.0)
    c = np.cumsum(log_decay, axis=-1)
    bias = c[..., :, None] - c[..., None, :]
    length = bias.shape[-1]
    return np.where(np.tril(np.ones((length, length), bool)), bias, np.nan)
