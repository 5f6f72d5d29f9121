"""The hook context: what a position term may need besides the token being transformed.

Every hook of an encoding (``embed``, ``rotate``, ``bias_fn``, ``contextual``) receives a
:class:`HookContext` from the layer that calls it. Attention and models fill in all of it
and never ask which encoding they hold; an encoding reads the fields it uses:

* positions of queries and keys (always there, as the hooks' own arguments also carry);
* which tokens are real: ``q_valid`` / ``k_valid`` mark padding, so a term that depends
  on the sequence's length (the normalized baseline, dynamic NTK, LongRoPE's switch) uses
  each example's own length, not the padded width of its batch;
* the layer's input (content-dependent position terms such as a forget gate read it);
* the layer's index in its stack.

A context without validity marks means "every token is real": the positions alone decide,
as they did before padding existed.
"""

from typing import NamedTuple

import jax.numpy as jnp

from posenc_jax.typing import Array


class HookContext(NamedTuple):
    """What a layer passes to its encoding's hooks.

    Attributes:
      q_positions: int32 ``[B, L]`` positions of the queries (of the tokens, for ``embed``).
      k_positions: int32 ``[B, S]`` positions of the keys (the queries' for ``embed``).
      q_valid: bool ``[B, L]``, False on padding queries; None when every query is real.
      k_valid: bool ``[B, S]``, False on padding keys; None when every key is real.
      inputs: the layer's input ``[B, L, D]`` (query side), or None where there is none
        (``embed`` at the model input gets the embeddings it transforms).
      layer_index: 0-based index of the layer in its stack; None outside a stack.
    """

    q_positions: Array
    k_positions: Array
    q_valid: Array | None = None
    k_valid: Array | None = None
    inputs: Array | None = None
    layer_index: int | None = None

    @property
    def has_padding(self) -> bool:
        """Whether some tokens are marked as padding (validity masks are present)."""
        return self.q_valid is not None or self.k_valid is not None

    def example_lengths(self) -> Array | None:
        """Each example's length: its largest real query or key position + 1, int32 ``[B]``.

        This is the "current length" of Hugging Face's dynamic scalings (largest position
        + 1), taken per example and over real tokens only. None when nothing is marked as
        padding: callers then read the positions as they are.
        """
        if not self.has_padding:
            return None
        q_last = largest_real_position(self.q_positions, self.q_valid)
        k_last = largest_real_position(self.k_positions, self.k_valid)
        return jnp.maximum(q_last, k_last) + 1


def for_tokens(positions: Array, valid: Array | None = None, **kwargs) -> HookContext:
    """The context of a hook that sees one sequence of tokens (``embed``): queries and keys
    are the same tokens."""
    return HookContext(positions, positions, valid, valid, **kwargs)


def largest_real_position(positions: Array, valid: Array | None) -> Array:
    """Per row, the largest position of a real token, int32 ``[B]`` (the int32 minimum for
    a row with none).

    Args:
      positions: integer ``[B, L]``.
      valid: bool ``[B, L]`` or None (every token real).
    """
    none = jnp.iinfo(jnp.int32).min
    positions = jnp.asarray(positions, jnp.int32)
    if valid is not None:
        positions = jnp.where(valid, positions, none)
    return jnp.max(positions, axis=-1, initial=none)
