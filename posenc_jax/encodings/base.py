"""The hook interface every positional encoding implements.

A positional encoding is defined by *where position enters* the computation
(see DESIGN.md). Each hook defaults to "position does not enter here":

* ``embed(x, positions)``: mixes position vectors into the token embeddings, once, at the
  model input. Default: returns ``x``.
* ``rotate(q, k, q_positions, k_positions)``: transforms queries and keys by position before
  the dot product. Default: returns ``(q, k)``.
* ``bias_fn(num_heads=..., causal=...)``: returns a pure function
  ``bias_fn(q_positions, k_positions) -> [..., H, L, S]`` added to the attention logits, or
  None. Being pure (parameters are closed over as arrays), it can be evaluated tile by tile
  inside a ``lax.scan`` by the chunked attention core.
* ``contextual(num_heads=..., head_dim=..., causal=...)``: returns a :class:`Contextual` (pure
  functions that adjust the full logit map from the queries' and keys' content, and
  optionally add a term to the outputs), or None. Encodings that use it also set
  ``needs_dense = True``: the chunked core never holds the full map they need.

Every hook also takes ``context=``, a :class:`~posenc_jax.encodings.context.HookContext`
(which tokens are padding, the layer's input, its index): attention and models always pass
it, an encoding reads what it uses (the normalized baseline and the length-dependent RoPE
scalings read each example's own length from it), and a direct call may leave it out.

Attention and models call every hook of the encoding they are given and never look at an
encoding's name: an encoding that adds position nowhere (NoPE) is the base class itself.

Parameters are created lazily inside the hook that needs them, with shapes taken from the
hook's inputs (model width from ``x``, head count from ``num_heads``), so a user never
repeats a dimension the surrounding model already knows. Flax allows one compact method
per module, so the hooks route through ``__call__``; subclasses override the private
``_embed`` / ``_rotate`` / ``_bias_fn`` / ``_contextual`` methods, which receive the context
as the keyword ``context`` (None when the caller gave none).
"""

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax.encodings.context import HookContext
from posenc_jax.typing import Array, BiasFn


class Contextual(NamedTuple):
    """The ``contextual`` hook's answer: pure functions of the full logit map and content.

    Both close over the encoding's parameter arrays (like a ``BiasFn``), so attention calls
    them without knowing which encoding produced them.

    Attributes:
      logits: ``logits(logits, q, k, q_positions, k_positions, allowed, scale)`` returns
        the adjusted float32 logits ``[B, H, L, S]``. It receives the scaled content logits
        ``scale * q.k`` (plus the encoding's bias, if it has one) in float32 ``[B, H, L, S]``,
        the queries ``q [B, L, H, K]``, the keys ``k [B, S, H, K]`` with their heads
        already repeated to H, integer positions ``[B, L]`` / ``[B, S]``, the boolean
        ``allowed [B, 1 or H, L, S]`` map (None when every pair is allowed) and the logit
        scale (``1 / sqrt(K)`` by default).
      values: None, or ``values(weights, q_positions, k_positions)`` that, given the
        attention weights ``[B, H, L, S]`` (float32, rows summing to 1 or 0), returns a
        float32 term ``[B, L, H, K]`` added to the attention output (Shaw's relative
        values).
      causal: the attention direction the terms are defined for (True for CoPE, whose
        positions count only earlier tokens), or None for either; attention called in the
        other direction raises instead of computing something else.
    """

    logits: Callable[..., Array]
    values: Callable[..., Array] | None = None
    causal: bool | None = None


class PositionalEncoding(nn.Module):
    """Base class of all encodings; on its own it is NoPE (no position anywhere).

    Class attributes that attention reads (capabilities, not names):
      causal_only: the encoding is defined only for causal attention (xPos, CoPE); using it
        bidirectionally is an error.
      needs_dense: the encoding needs the full logit map, so the chunked core cannot be used.
    """

    causal_only: ClassVar[bool] = False
    needs_dense: ClassVar[bool] = False

    @nn.compact
    def __call__(self, hook: str, *args, **kwargs):
        return getattr(self, f"_{hook}")(*args, **kwargs)

    def embed(self, x: Array, positions: Array, *, context: HookContext | None = None) -> Array:
        """Adds position information to embeddings ``x [B, L, D]`` at ``positions [B, L]``."""
        return self("embed", x, positions, context=context)

    def rotate(
        self,
        q: Array,
        k: Array,
        q_positions: Array,
        k_positions: Array,
        *,
        context: HookContext | None = None,
    ) -> tuple[Array, Array]:
        """Transforms ``q [B, L, H, K]`` and ``k [B, S, G, K]`` by their positions."""
        return self("rotate", q, k, q_positions, k_positions, context=context)

    def bias_fn(
        self, *, num_heads: int, causal: bool, context: HookContext | None = None
    ) -> BiasFn | None:
        """Returns the additive logit bias as a pure function of positions, or None."""
        return self("bias_fn", num_heads=num_heads, causal=causal, context=context)

    def contextual(
        self, *, num_heads: int, head_dim: int, causal: bool, context: HookContext | None = None
    ) -> Contextual | None:
        """Returns the content-dependent logit (and output) terms, or None."""
        return self(
            "contextual", num_heads=num_heads, head_dim=head_dim, causal=causal, context=context
        )

    @nn.nowrap
    def sample_positions(
        self, key: Array, batch_size: int, length: int, *, lengths: Array | None = None
    ) -> Array:
        """The positions a model should be fed for a batch: ``arange(length)`` by default.

        Positions are data: an encoding that is a different *choice of positions*
        (randomized positions, Ruoss et al. 2023) overrides this and nothing else. Training
        and evaluation code call it instead of assuming ``arange``.

        Args:
          key: a PRNG key.
          batch_size: B.
          length: L, the (padded) width of the batch.
          lengths: int ``[B]``, each example's own number of real tokens, which come first
            in its row (padding follows); None when every row is ``length`` tokens long.
            An encoding that samples positions samples them for the example's own length,
            so a padded example gets the positions it would get unpadded.

        Returns:
          int32 ``[batch_size, length]``.
        """
        del key, lengths
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch_size, length))

    # Defaults: position does not enter through this hook.
    def _embed(self, x: Array, positions: Array, *, context: HookContext | None = None) -> Array:
        return x

    def _rotate(self, q, k, q_positions, k_positions, *, context: HookContext | None = None):
        return q, k

    def _bias_fn(self, *, num_heads: int, causal: bool, context=None) -> BiasFn | None:
        return None

    def _contextual(self, *, num_heads: int, head_dim: int, causal: bool, context=None):
        return None
