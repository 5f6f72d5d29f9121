"""Why not feed the normalized position ``i/(L-1)``, or the integer ``i``, as the encoding.

Two requirements a position signal should meet (Vaswani et al. 2017, Section 3.5, argue for
sinusoids with the same two):

* the same offset should look the same in every sequence. Normalized position breaks this:
  "one step apart" is ``1/3`` in a sentence of 4 tokens and ``1/63`` in one of 64, so what
  a model learns about neighbours at one length does not transfer to another;
* values should stay bounded, so that positions never seen in training stay in the range
  the model was trained on. Integer position breaks this: it grows without bound, while a
  sinusoidal vector has the same norm ``sqrt(D/2)`` at every position.
"""

from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

from posenc_jax._checks import is_integer
from posenc_jax.analysis.position_vectors import position_vectors
from posenc_jax.encodings.base import PositionalEncoding


def neighbour_step(feature: Callable, lengths: Sequence[int]) -> np.ndarray:
    """``f(i + 1) - f(i)`` of a scalar position feature, in sequences of each length.

    Args:
      feature: maps integer positions ``[L]`` to a float feature ``[L]``, e.g.
        ``posenc_jax.functional.normalized_positions`` or ``integer_positions``.
      lengths: sequence lengths, each at least 2.

    Returns:
      float64 ``[len(lengths)]``: the step between neighbours in a sequence of that length.

    Raises:
      ValueError: for a length below 2, or if the feature's step is not the same between
        every pair of neighbours of a sequence (then no single "one step" value exists).
    """
    steps = []
    for length in lengths:
        if not is_integer(length) or length < 2:
            raise ValueError(
                f"every length must be an integer of at least 2 to have neighbours, got {length!r}."
            )
        values = np.asarray(feature(jnp.arange(int(length), dtype=jnp.int32)), np.float64)
        differences = np.diff(values)
        # What float32 values can differ by through rounding alone, at their magnitude.
        rounding = 4 * np.finfo(np.float32).eps * np.max(np.abs(values))
        if not np.allclose(differences, differences[0], rtol=1e-5, atol=rounding):
            raise ValueError(
                f"the feature's neighbour step varies within a sequence of length {length} "
                f"({differences.min():.3g} .. {differences.max():.3g}); neighbour_step needs "
                "a feature that is linear in the position."
            )
        steps.append(differences[0])
    return np.asarray(steps)


def position_norms(
    encoding: PositionalEncoding,
    positions,
    dim: int,
    *,
    params=None,
    seed: int = 0,
) -> np.ndarray:
    """Euclidean norm of the vector ``encoding`` adds at each position, float64 ``[L]``.

    Args:
      encoding: an encoding with an ``embed`` hook (sinusoidal, integer, learned, ...).
      positions: integer ``[L]``.
      dim: the model width D.
      params: the encoding's parameters; None initializes them with ``seed``.
      seed: initialization seed when ``params`` is None.
    """
    vectors = position_vectors(encoding, positions, dim, params=params, seed=seed)
    return np.linalg.norm(vectors.astype(np.float64), axis=-1)
