"""The hook interface every positional encoding implements, defined once for linen and NNX.

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
* ``decay(num_heads=..., causal=...)``: returns each token's log decay ``a_t [B, H, L]``
  (computed from the layer's input, ``context.inputs``), or None. Attention adds
  ``sum_{j < s <= i} a_s`` to the logit of query i and key j: a per-token separable bias
  ``c_i - c_j`` with ``c`` the cumulative sum of ``a`` over the sequence (padding adds
  nothing), which every backend tiles in O(L) memory and a decoding cache continues from
  the cached keys' ``c``. The Forgetting Transformer's forget gate and Cable use it.

Every hook also takes ``context=``, a :class:`~posenc_jax.encodings.context.HookContext`
(which tokens are padding, the layer's input, its index): attention and models always pass
it, an encoding reads what it uses (the normalized baseline and the length-dependent RoPE
scalings read each example's own length from it), and a direct call may leave it out.

Attention and models call every hook of the encoding they are given and never look at an
encoding's name: an encoding that adds position nowhere (NoPE) is the base class itself.

**The definition, once.** A subclass is a frozen set of hyperparameters (its fields) with

* its parameters, declared by name, shape and initializer
  (:class:`~posenc_jax.encodings.parameters.Parameter`) as functions of the model's
  dimensions (:class:`~posenc_jax.encodings.parameters.Dims`):
  :meth:`~PositionalEncoding.embed_parameters` for those the ``embed`` hook uses (one set
  per stack, where the embedding runs) and :meth:`~PositionalEncoding.attention_parameters`
  for those of ``rotate``, ``bias_fn``, ``contextual`` and ``decay`` (one set per
  attention layer);
* its hooks as pure functions of those parameters' values: ``embed_with(params, ...)``,
  ``rotate_with(params, ...)``, ``bias_fn_with(params, ...)``,
  ``contextual_with(params, ...)`` and ``decay_with(params, ...)``, with the hooks'
  arguments.

**Two skins.** This class is also the linen module: ``embed``, ``rotate``, ``bias_fn``,
``contextual`` and ``decay`` create the declared parameters lazily, inside the hook that
needs them, with the dimensions the hook's inputs carry (model width from ``x``, head
count from ``num_heads``), so a user never repeats a dimension the surrounding model already knows;
then they call the pure hook. :class:`posenc_jax.nnx.Encoding` creates the same
parameters as ``nnx.Param`` at construction, from the dimensions it is built with, and
calls the same pure hooks.

An encoding written only for linen may still define the private ``_embed`` /
``_rotate`` / ``_bias_fn`` / ``_contextual`` methods and create its parameters with
``self.param``; linen runs it as before, NNX refuses it (:meth:`linen_only_hooks`).
"""

from collections.abc import Callable
from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax.encodings.context import HookContext
from posenc_jax.encodings.parameters import Dims, Specs, linen_parameters
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


#: The hooks, in DESIGN.md's order; each has a pure form ``{hook}_with`` and a linen form.
HOOKS = ("embed", "rotate", "bias_fn", "contextual", "decay")


def hook_dims(hook: str, args: tuple, kwargs: dict) -> Dims:
    """The model dimensions a call of ``hook`` carries: the width of ``x`` (``embed``), the
    heads and head dim of ``q`` (``rotate``), the keywords (``bias_fn``, ``contextual``,
    ``decay``), and ``d_model`` from the hook context's layer input where there is one."""
    context = kwargs.get("context")
    d_model = None if context is None or context.inputs is None else context.inputs.shape[-1]
    given_by = f"the {hook} hook"
    if hook == "embed":
        return Dims(d_model=args[0].shape[-1], given_by=given_by)
    if hook == "rotate":
        q = args[0]
        return Dims(d_model=d_model, num_heads=q.shape[-2], head_dim=q.shape[-1], given_by=given_by)
    return Dims(
        d_model=d_model,
        num_heads=kwargs["num_heads"],
        head_dim=kwargs.get("head_dim"),
        given_by=given_by,
    )


class EncodingHooks:
    """The hooks as methods, the same in both skins; a skin runs them through
    ``run_hook(hook, *args, **kwargs)``."""

    def embed(self, x: Array, positions: Array, *, context: HookContext | None = None) -> Array:
        """Adds position information to embeddings ``x [B, L, D]`` at ``positions [B, L]``."""
        return self.run_hook("embed", x, positions, context=context)

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
        return self.run_hook("rotate", q, k, q_positions, k_positions, context=context)

    def bias_fn(
        self, *, num_heads: int, causal: bool, context: HookContext | None = None
    ) -> BiasFn | None:
        """Returns the additive logit bias as a pure function of positions, or None."""
        return self.run_hook("bias_fn", num_heads=num_heads, causal=causal, context=context)

    def contextual(
        self, *, num_heads: int, head_dim: int, causal: bool, context: HookContext | None = None
    ) -> Contextual | None:
        """Returns the content-dependent logit (and output) terms, or None."""
        return self.run_hook(
            "contextual", num_heads=num_heads, head_dim=head_dim, causal=causal, context=context
        )

    def decay(
        self, *, num_heads: int, causal: bool, context: HookContext | None = None
    ) -> Array | None:
        """Returns each token's log decay ``[B, H, L]`` (from ``context.inputs``), or None."""
        return self.run_hook("decay", num_heads=num_heads, causal=causal, context=context)


class PositionalEncoding(EncodingHooks, nn.Module):
    """Base class of all encodings; on its own it is NoPE (no position anywhere).

    Class attributes that attention reads (capabilities, not names):
      causal_only: the encoding is defined only for causal attention (xPos, CoPE); using it
        bidirectionally is an error.
      needs_dense: the encoding needs the full logit map, so the chunked core cannot be used.
      needs_task_positions: the encoding's embedding reads positions the task assigns
        (:meth:`embed_positions`), so it runs only on tasks that assign them.
    """

    causal_only: ClassVar[bool] = False
    needs_dense: ClassVar[bool] = False
    needs_task_positions: ClassVar[bool] = False

    # --- The definition: parameters and pure hooks, shared by linen and NNX. ---------------

    @nn.nowrap
    def embed_parameters(self, dims: Dims) -> Specs:
        """The parameters the ``embed`` hook uses (one set per stack): name -> Parameter.

        Args:
          dims: the model's dimensions; the linen hook gives ``d_model`` (from ``x``).
        """
        del dims
        return {}

    @nn.nowrap
    def attention_parameters(self, dims: Dims) -> Specs:
        """The parameters ``rotate``, ``bias_fn``, ``contextual`` and ``decay`` use (one
        set per attention layer): name -> Parameter.

        Args:
          dims: the layer's dimensions. The linen hooks give what they see: ``rotate`` and
            ``contextual`` the head count and head dim, ``bias_fn`` and ``decay`` the head
            count; all of them ``d_model`` when the hook context carries the layer's input.
        """
        del dims
        return {}

    @nn.nowrap
    def embed_with(
        self, params: dict, x: Array, positions: Array, *, context: HookContext | None = None
    ) -> Array:
        """The pure ``embed`` hook: ``x [B, L, D]`` with position mixed in."""
        del params, positions, context
        return x

    @nn.nowrap
    def rotate_with(
        self,
        params: dict,
        q: Array,
        k: Array,
        q_positions: Array,
        k_positions: Array,
        *,
        context: HookContext | None = None,
    ) -> tuple[Array, Array]:
        """The pure ``rotate`` hook: ``q [B, L, H, K]`` and ``k [B, S, G, K]`` transformed."""
        del params, q_positions, k_positions, context
        return q, k

    @nn.nowrap
    def bias_fn_with(
        self, params: dict, *, num_heads: int, causal: bool, context: HookContext | None = None
    ) -> BiasFn | None:
        """The pure ``bias_fn`` hook: a pure function of positions, or None."""
        del params, num_heads, causal, context
        return None

    @nn.nowrap
    def contextual_with(
        self,
        params: dict,
        *,
        num_heads: int,
        head_dim: int,
        causal: bool,
        context: HookContext | None = None,
    ) -> Contextual | None:
        """The pure ``contextual`` hook: a :class:`Contextual`, or None."""
        del params, num_heads, head_dim, causal, context
        return None

    @nn.nowrap
    def decay_with(
        self, params: dict, *, num_heads: int, causal: bool, context: HookContext | None = None
    ) -> Array | None:
        """The pure ``decay`` hook: each token's log decay ``a_t``, float32 ``[B, H, L]``
        for the tokens of ``context.inputs [B, L, D]``, or None."""
        del params, num_heads, causal, context
        return None

    @classmethod
    def defined_hooks(cls) -> tuple[str, ...]:
        """The hooks this class defines (in either form), in :data:`HOOKS` order."""
        linen_only = cls.linen_only_hooks()
        return tuple(
            hook
            for hook in HOOKS
            if hook in linen_only
            or getattr(cls, f"{hook}_with") is not getattr(PositionalEncoding, f"{hook}_with")
        )

    @classmethod
    def linen_only_hooks(cls) -> tuple[str, ...]:
        """The hooks this class defines the linen way (a private ``_embed``, ``_rotate``,
        ``_bias_fn`` or ``_contextual`` that makes its parameters with ``self.param``),
        which an NNX layer cannot run."""
        return tuple(hook for hook in HOOKS if hasattr(cls, f"_{hook}"))

    @nn.nowrap
    def uses_hook(self, hook: str) -> bool:
        """Whether position enters through ``hook`` (one of :data:`HOOKS`): its parameters
        are created only where a hook that uses them runs."""
        return hook in self.defined_hooks()

    @nn.nowrap
    def rotated_width(self, head_dim: int) -> int:
        """The width of queries and keys after :meth:`rotate` for heads of ``head_dim``
        features: ``head_dim`` (rotations keep it; PoPE doubles it). A decoding cache sizes
        its keys by it."""
        return head_dim

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

    @nn.nowrap
    def embed_positions(
        self, key: Array, task_positions: Array | None, *, training: bool
    ) -> Array | None:
        """The positions the ``embed`` hook reads, when they are not the model's positions.

        The model's positions (:meth:`sample_positions`) order the tokens: causality,
        windows, the cache and the attention hooks read them. An encoding whose embedding
        is indexed by positions the *task* assigns (each digit's place in its own number:
        Abacus, position coupling) overrides this and returns them, with whatever it adds
        in training (a random offset); the model then feeds them to ``embed`` alone.
        None (the default): ``embed`` reads the model's positions.

        Args:
          key: a PRNG key.
          task_positions: int ``[B, L]``, the positions the task assigns to each input
            token (``batch["task_positions"]``); None when the task assigns none.
          training: whether the batch is a training batch (offsets drawn for training
            only are drawn here).

        Returns:
          int32 ``[B, L]``, or None.
        """
        del key, task_positions, training
        return None

    # --- The linen skin. ---------------------------------------------------------------------

    # Linen runs (and lets interceptors see) only a module class's own methods: the hooks
    # are bound here as this class's.
    embed = EncodingHooks.embed
    rotate = EncodingHooks.rotate
    bias_fn = EncodingHooks.bias_fn
    contextual = EncodingHooks.contextual
    decay = EncodingHooks.decay

    @nn.nowrap
    def run_hook(self, hook: str, *args, **kwargs):
        # Flax allows one compact method per module, so the hooks route through __call__.
        return self(hook, *args, **kwargs)

    @nn.compact
    def __call__(self, hook: str, *args, **kwargs):
        """Runs ``hook`` (one of :data:`HOOKS`) with its parameters, created on first use
        from the dimensions the call carries (:func:`hook_dims`)."""
        if hook in self.linen_only_hooks():
            return getattr(self, f"_{hook}")(*args, **kwargs)
        params = {}
        if self.uses_hook(hook):
            dims = hook_dims(hook, args, kwargs)
            if hook == "embed":
                params = linen_parameters(self, self.embed_parameters(dims))
            else:
                params = linen_parameters(self, self.attention_parameters(dims))
        return getattr(self, f"{hook}_with")(params, *args, **kwargs)
