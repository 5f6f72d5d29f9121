"""Randomized positions (Ruoss et al., 2023): any encoding, fed a random subset of positions."""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn

from posenc_jax._checks import check_positive_int
from posenc_jax.encodings.base import PositionalEncoding
from posenc_jax.encodings.parameters import Dims, Specs
from posenc_jax.encodings.registry import get, register
from posenc_jax.functional.random_positions import random_subset_positions
from posenc_jax.typing import Array, BiasFn


class _FromBase:
    """A capability read from the wrapped encoding.

    On an instance it is the ``base`` encoding's value; on the class, which wraps nothing
    yet, it is the base class default (False).
    """

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner) -> bool:
        if instance is None:
            return getattr(PositionalEncoding, self.name)
        return getattr(instance.base, self.name)


@register("randomized")
class Randomized(PositionalEncoding):
    """Wraps an encoding so that a length-L sequence gets positions sampled from ``[0, M)``.

    Randomized positional encodings change *which positions* a sequence is given, nothing
    else: each row of a batch gets a sorted sample of L distinct integers from
    ``[0, max_position)`` instead of ``arange(L)``, so a model trained on short sequences
    has already seen the large positions (and distances) of long ones. The same sampling
    is used at evaluation, as in the paper, so ``max_position`` must be at least the
    longest evaluation length (at length M the sample is ``arange(M)``). Every hook
    (``embed``, ``rotate``, ``bias_fn``, ``contextual``, ``decay``, and the capabilities
    ``causal_only`` and ``needs_dense``) is the wrapped encoding's; only
    :meth:`sample_positions` differs, and the wrapped encoding never knows. Training and
    evaluation code get positions from :meth:`sample_positions` and pass them to the model;
    the wrapped encoding's parameters live under ``wrapped`` in each layer.

    Build it from a registered name or from an encoding::

        get("randomized", base="alibi", max_position=2048)
        get("randomized", base="learned", base_kwargs={"max_length": 2048})
        get("randomized", base=get("rope", base=10000.0))

    Attributes:
      base: the wrapped encoding, or its registered name.
      max_position: M, the number of positions sampled from (2048 in the paper's
        experiments). A sequence longer than M is an error.
      base_kwargs: hyperparameters of the wrapped encoding when ``base`` is a name.

    References:
      Ruoss et al., "Randomized Positional Encodings Boost Length Generalization of
      Transformers", ACL 2023.
    """

    base: PositionalEncoding | str = "nope"
    max_position: int = 2048
    base_kwargs: Mapping[str, Any] | None = None

    def __post_init__(self):
        # Resolve a name into the encoding now, so the wrapper holds one kind of value
        # (a hashable module) and clones of it carry the same wrapped encoding.
        if isinstance(self.base, str):
            object.__setattr__(self, "base", get(self.base, **dict(self.base_kwargs or {})))
            object.__setattr__(self, "base_kwargs", None)
        elif self.base_kwargs:
            raise ValueError(
                "randomized base_kwargs are only used with a base given by name; got base="
                f"{type(self.base).__name__} and base_kwargs={dict(self.base_kwargs)}."
            )
        if not isinstance(self.base, PositionalEncoding):
            raise ValueError(
                f"randomized base must be an encoding or a registered name, got {self.base!r}."
            )
        linen_only = self.base.linen_only_hooks()
        if linen_only:
            raise ValueError(
                f"randomized wraps encodings defined by their parameters and pure hooks; "
                f"{type(self.base).__name__} defines {', '.join(linen_only)} the linen way "
                "(overriding the private hook); define it with the *_with hooks instead."
            )
        check_positive_int(self.max_position, "randomized max_position")
        super().__post_init__()

    causal_only = _FromBase()
    needs_dense = _FromBase()
    needs_task_positions = _FromBase()

    @nn.nowrap
    def sample_positions(
        self, key: Array, batch_size: int, length: int, *, lengths: Array | None = None
    ) -> Array:
        """Sorted samples without replacement from ``[0, max_position)``, one per row.

        Row ``b`` gets a uniformly random sorted subset of ``n`` positions, ``n`` its
        example's length: the paper's ``sort(choice(..., replace=False))``
        (:func:`posenc_jax.functional.random_subset_positions`). The real tokens' positions
        depend only on the row's key and ``n``, so a padded example gets exactly the
        positions it gets unpadded; padding slots take distinct positions that are never
        attended.

        Args:
          key: a PRNG key; rows use independent keys split from it.
          batch_size: B.
          length: L, at most ``max_position``.
          lengths: int ``[B]`` real tokens per row (they come first), or None for ``L``.

        Returns:
          int32 ``[batch_size, length]``, strictly increasing over each row's real tokens.

        Raises:
          ValueError: if ``length > max_position``.
        """
        if length > self.max_position:
            raise ValueError(
                f"randomized positions: a sequence of length {length} needs at least {length} "
                f"distinct positions, but max_position={self.max_position}; build the "
                f"encoding with max_position >= {length} (the paper uses 2048)."
            )
        return random_subset_positions(key, batch_size, length, self.max_position, lengths)

    @nn.nowrap
    def rotated_width(self, head_dim: int) -> int:
        return self.base.rotated_width(head_dim)

    @nn.nowrap
    def embed_positions(self, key: Array, task_positions: Array | None, *, training: bool):
        """The wrapped encoding's (randomized positions replace only the model's positions)."""
        return self.base.embed_positions(key, task_positions, training=training)

    # Every hook is the wrapped encoding's, with its parameters under "wrapped" (in each
    # layer that uses the wrapper, like the parameters of an unwrapped encoding).

    def uses_hook(self, hook: str) -> bool:
        return self.base.uses_hook(hook)

    def embed_parameters(self, dims: Dims) -> Specs:
        return _under_wrapped(self.base.embed_parameters(dims))

    def attention_parameters(self, dims: Dims) -> Specs:
        return _under_wrapped(self.base.attention_parameters(dims))

    def embed_with(self, params, x: Array, positions: Array, *, context=None) -> Array:
        return self.base.embed_with(_wrapped(params), x, positions, context=context)

    def rotate_with(
        self, params, q: Array, k: Array, q_positions: Array, k_positions: Array, *, context=None
    ):
        return self.base.rotate_with(
            _wrapped(params), q, k, q_positions, k_positions, context=context
        )

    def bias_fn_with(self, params, *, num_heads: int, causal: bool, context=None) -> BiasFn | None:
        return self.base.bias_fn_with(
            _wrapped(params), num_heads=num_heads, causal=causal, context=context
        )

    def contextual_with(self, params, **kwargs):
        return self.base.contextual_with(_wrapped(params), **kwargs)

    def decay_with(self, params, **kwargs):
        return self.base.decay_with(_wrapped(params), **kwargs)


def _under_wrapped(specs: Specs) -> Specs:
    return {"wrapped": specs} if specs else {}


def _wrapped(params: dict) -> dict:
    return params.get("wrapped", {})
