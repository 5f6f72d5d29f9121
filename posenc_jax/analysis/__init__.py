"""Properties of positional encodings, as computations that return arrays and numbers.

Each answers one question researchers ask about position in attention, and each backs one
figure of ``python -m experiments.figures``:

* :func:`permutation_test` -- without position, an encoder is permutation-equivariant.
* :func:`neighbour_step`, :func:`position_norms`, :func:`position_vectors` -- why not the
  normalized position ``i/(L-1)`` or the integer ``i``.
* :func:`binary_counter` -- the sinusoidal encoding as a continuous binary counter.
* :func:`fit_shift_maps`, :func:`shift_rotation` -- ``PE(t + k) = M_k PE(t)``.
* :func:`position_dot_products`, :func:`dot_product_profile` -- dot products depend on
  distance only and decay.
* :func:`rope_decay`, :func:`rope_decay_bound`, :func:`rope_decay_integral` -- RoPE's
  long-term decay and the frequency schedules that do or do not give it.
* :func:`bias_profile` -- ``b_h(i, j)`` against distance for the relative biases;
  :func:`decay_bias_map` -- one example's ``c_i - c_j`` of a content-dependent decay.
* :func:`attention_weights` -- attention maps of a Transformer, layer by layer.
"""

from posenc_jax.analysis.attention_maps import attention_weights
from posenc_jax.analysis.bias_shapes import bias_profile, decay_bias_map
from posenc_jax.analysis.binary_counter import binary_counter
from posenc_jax.analysis.dot_products import dot_product_profile, position_dot_products
from posenc_jax.analysis.equivariance import PermutationTest, permutation_test
from posenc_jax.analysis.naive_positions import neighbour_step, position_norms
from posenc_jax.analysis.position_vectors import position_vectors
from posenc_jax.analysis.relative_shift import ShiftFit, fit_shift_maps, shift_rotation
from posenc_jax.analysis.rope_decay import rope_decay, rope_decay_bound, rope_decay_integral

__all__ = [
    "PermutationTest",
    "ShiftFit",
    "attention_weights",
    "bias_profile",
    "decay_bias_map",
    "binary_counter",
    "dot_product_profile",
    "fit_shift_maps",
    "neighbour_step",
    "permutation_test",
    "position_dot_products",
    "position_norms",
    "position_vectors",
    "rope_decay",
    "rope_decay_bound",
    "rope_decay_integral",
    "shift_rotation",
]
