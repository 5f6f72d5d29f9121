"""Positional encodings as Flax NNX modules, from the same definitions as the linen ones.

``get(name, **hyperparameters)`` returns the encoding's definition (the registered class,
the one :func:`posenc_jax.encodings.get` builds): its hyperparameters, its parameter
declarations and its pure hooks. An NNX attention layer given a definition builds its own
:class:`Encoding` from it, with the layer's dimensions and ``rngs``, as every NNX layer
builds its parameters at construction; an :class:`Encoding` given instead is used as it is
(shared, e.g. one per stack).
"""

from collections.abc import Sequence

from flax import nnx

from posenc_jax.encodings import registry
from posenc_jax.encodings.base import EncodingHooks, PositionalEncoding, hook_dims
from posenc_jax.encodings.parameters import Dims, merge_specs
from posenc_jax.nnx.parameters import create_parameters, parameter_values
from posenc_jax.typing import Array

PLACES = ("embed", "attention")


def names() -> list[str]:
    """Every registered encoding name, sorted (those of :func:`posenc_jax.encodings.names`)."""
    return registry.names()


def get(name: str, **hyperparameters) -> PositionalEncoding:
    """The definition of the encoding registered under ``name``, for NNX layers.

    Raises:
      ValueError: for an unknown name (the message lists the valid ones) or a keyword the
        encoding does not take (the message lists the ones it does).
    """
    return registry.get(name, **hyperparameters)


class Encoding(EncodingHooks, nnx.Module):
    """An encoding's parameters as NNX state, and its hooks.

    The parameters are the definition's declarations (``embed_parameters`` for the
    ``embed`` hook, ``attention_parameters`` for ``rotate``, ``bias_fn`` and
    ``contextual``), created from the dimensions given here, one attribute per name (a
    wrapped encoding's under ``wrapped``), as a linen layer creates them lazily. The hooks
    are the definition's pure hooks given those values, with the linen hooks' signatures
    (``embed``, ``rotate``, ``bias_fn``, ``contextual``).

    Example::

        t5 = pj.nnx.Encoding(pj.nnx.encodings.get("t5"), num_heads=4, rngs=nnx.Rngs(0))
        bias_fn = t5.bias_fn(num_heads=4, causal=True)  # t5.relative_attention_bias: [4, 32]

    Args:
      definition: the encoding (``pj.nnx.encodings.get(name)``).
      d_model: D, the width of the embeddings (the ``embed`` hook's parameters).
      num_heads: H of the attention layer(s) that call the hooks.
      head_dim: K of those layers.
      places: which parameters to create: "embed" (one set per stack, at its input),
        "attention" (one set per attention layer), or both (an encoding a stack shares
        with its layers).
      rngs: the parameters' random keys.

    Raises:
      ValueError: a definition written for linen only (its hooks create parameters with
        ``self.param``), an unknown place, or a dimension a declaration needs but was not
        given.
    """

    def __init__(
        self,
        definition: PositionalEncoding,
        *,
        d_model: int | None = None,
        num_heads: int | None = None,
        head_dim: int | None = None,
        places: Sequence[str] = PLACES,
        rngs: nnx.Rngs,
    ):
        if not isinstance(definition, PositionalEncoding):
            raise ValueError(
                "Encoding needs an encoding definition (pj.nnx.encodings.get(name)), got "
                f"{definition!r}."
            )
        linen_only = definition.linen_only_hooks()
        if linen_only:
            raise ValueError(
                f"{type(definition).__name__} defines {', '.join(linen_only)} for linen only "
                "(it overrides the private hook and makes its parameters with self.param); "
                "to use it in NNX, declare its parameters in embed_parameters / "
                "attention_parameters and write its hooks as embed_with / rotate_with / "
                "bias_fn_with / contextual_with (DESIGN.md, 'Adding an encoding')."
            )
        unknown = sorted(set(places) - set(PLACES))
        if unknown:
            raise ValueError(f"unknown places {unknown}; valid: {', '.join(PLACES)}.")
        dims = Dims(
            d_model=d_model,
            num_heads=num_heads,
            head_dim=head_dim,
            given_by=f"this Encoding({type(definition).__name__})",
        )
        embed = definition.embed_parameters(dims) if "embed" in places else {}
        attention = definition.attention_parameters(dims) if "attention" in places else {}
        self.definition = definition
        self.built_for = (("d_model", d_model), ("num_heads", num_heads), ("head_dim", head_dim))
        self._embed_names, self._attention_names = tuple(embed), tuple(attention)
        create_parameters(self, merge_specs(embed, attention), rngs)

    @property
    def causal_only(self) -> bool:
        return self.definition.causal_only

    @property
    def needs_dense(self) -> bool:
        return self.definition.needs_dense

    def uses_hook(self, hook: str) -> bool:
        """Whether position enters through ``hook`` (the definition's answer)."""
        return self.definition.uses_hook(hook)

    @property
    def needs_task_positions(self) -> bool:
        return self.definition.needs_task_positions

    def rotated_width(self, head_dim: int) -> int:
        """The width of queries and keys after ``rotate`` (the definition's)."""
        return self.definition.rotated_width(head_dim)

    def run_hook(self, hook: str, *args, **kwargs):
        """Runs the definition's pure ``hook`` with this encoding's parameters."""
        called = hook_dims(hook, args, kwargs).known()
        for name, built in self.built_for:
            if built is not None and name in called and called[name] != built:
                raise ValueError(
                    f"this {type(self.definition).__name__} encoding was built for "
                    f"{name}={built} but is called with {name}={called[name]}."
                )
        names = self._embed_names if hook == "embed" else self._attention_names
        pure_hook = getattr(self.definition, f"{hook}_with")
        return pure_hook(parameter_values(self, names), *args, **kwargs)

    def sample_positions(
        self, key: Array, batch_size: int, length: int, *, lengths: Array | None = None
    ) -> Array:
        """The positions a model should be fed (the definition's ``sample_positions``)."""
        return self.definition.sample_positions(key, batch_size, length, lengths=lengths)

    def embed_positions(
        self, key: Array, task_positions: Array | None, *, training: bool
    ) -> Array | None:
        """The ``embed`` hook's own positions, or None (the definition's
        ``embed_positions``)."""
        return self.definition.embed_positions(key, task_positions, training=training)
