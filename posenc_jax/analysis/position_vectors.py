"""The vector an absolute encoding adds to the token embedding at each position."""

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.encodings.base import PositionalEncoding


def position_vectors(
    encoding: PositionalEncoding,
    positions,
    dim: int,
    *,
    params=None,
    seed: int = 0,
) -> np.ndarray:
    """What ``encoding.embed`` adds at each position: its output on zero embeddings.

    Works for every encoding through the ``embed`` hook (zeros for those that add nothing
    there, such as RoPE or the relative biases).

    Args:
      encoding: an encoding module, e.g. ``posenc_jax.encodings.get("integer")``.
      positions: integer ``[L]``.
      dim: the model width D.
      params: the encoding's parameters (e.g. from a trained model); None initializes them
        with ``seed``.
      seed: initialization seed when ``params`` is None.

    Returns:
      float32 ``[L, D]``.

    Raises:
      ValueError: if ``positions`` is not a 1-D integer array.
    """
    positions = jnp.asarray(positions)
    if positions.ndim != 1 or not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(
            f"positions must be a 1-D integer array [L], got {positions.dtype}"
            f"{list(positions.shape)}."
        )
    zeros = jnp.zeros((1, positions.shape[0], dim), jnp.float32)
    batched = positions[None].astype(jnp.int32)
    # Run eagerly, not under jit: with concrete positions an encoding checks them at once
    # (a learned table asked for a position past its size raises a clear ValueError).
    if params is None:
        variables = encoding.init(jax.random.key(seed), "embed", zeros, batched)
    else:
        variables = {"params": params}
    return np.asarray(encoding.apply(variables, "embed", zeros, batched)[0])
