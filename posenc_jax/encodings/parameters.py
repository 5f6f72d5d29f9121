"""Parameter declarations: what a layer learns, written once for Flax linen and Flax NNX.

An encoding (or Multi-Token Attention) declares each of its parameters by name, with a
shape computed from the model's dimensions (:class:`Dims`) and an initializer
(:class:`Parameter`). Its computations are pure functions that receive the values as a
dict under those names (a nested dict for the parameters of a wrapped encoding). Two skins
create the values:

* linen (:func:`linen_parameters`): ``Module.param`` under each name, inside the hook
  that needs them, with the dimensions that hook sees; nested dicts become child scopes.
  The parameter trees are those of modules that called ``self.param`` directly.
* NNX (``posenc_jax.nnx``): an ``nnx.Param`` per name at construction, with the
  dimensions the layer is built with.
"""

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import flax.linen as nn
import jax.numpy as jnp

from posenc_jax.typing import Array


class Parameter(NamedTuple):
    """One learned array: its shape and how it starts.

    Attributes:
      shape: the array's shape, computed from the model's dimensions.
      init: ``init(key, shape, dtype) -> Array``, e.g. a ``jax.nn.initializers`` function.
      dtype: the parameter's dtype.
    """

    shape: tuple[int, ...]
    init: Callable[..., Array]
    dtype: Any = jnp.float32


#: Parameters by name: each value a :class:`Parameter`, or a nested mapping of the same
#: kind that groups the parameters of a wrapped definition.
Specs = Mapping[str, Any]


class Dims:
    """The model dimensions a parameter's shape may depend on.

    Reading a dimension the caller did not give is an error that names it: a linen hook
    sees only some dimensions (``bias_fn`` is told the head count, not the head dim), and
    an NNX encoding built without one cannot create parameters that need it.

    Args:
      d_model: D, the width of the layer's input.
      num_heads: H, query heads.
      head_dim: K, the width of a query/key head.
      given_by: who gave these dimensions, for the error message.
    """

    _NAMES = ("d_model", "num_heads", "head_dim")

    def __init__(
        self,
        *,
        d_model: int | None = None,
        num_heads: int | None = None,
        head_dim: int | None = None,
        given_by: str = "the caller",
    ):
        self._values = {"d_model": d_model, "num_heads": num_heads, "head_dim": head_dim}
        self._given_by = given_by

    def _get(self, name: str) -> int:
        value = self._values[name]
        if value is None:
            raise ValueError(
                f"a parameter's shape needs {name}, which {self._given_by} does not give; "
                f"give {name} where the parameters are created."
            )
        return value

    @property
    def d_model(self) -> int:
        return self._get("d_model")

    @property
    def num_heads(self) -> int:
        return self._get("num_heads")

    @property
    def head_dim(self) -> int:
        return self._get("head_dim")

    def known(self) -> dict[str, int]:
        """The dimensions given, by name."""
        return {name: value for name, value in self._values.items() if value is not None}

    def __repr__(self) -> str:
        given = ", ".join(f"{k}={v}" for k, v in self.known().items())
        return f"Dims({given})"


def merge_specs(first: Specs, second: Specs) -> dict:
    """Both declarations in one (an encoding used for its embedding and its attention).

    A name declared twice must declare the same parameter (or two groups, merged).
    """
    merged = dict(first)
    for name, spec in second.items():
        if name not in merged:
            merged[name] = spec
        elif isinstance(spec, Parameter) or isinstance(merged[name], Parameter):
            if merged[name] != spec:
                raise ValueError(
                    f"parameter {name!r} is declared twice with different shapes or "
                    f"initializers: {merged[name]} and {spec}."
                )
        else:
            merged[name] = merge_specs(merged[name], spec)
    return merged


def linen_parameters(module: nn.Module, specs: Specs) -> dict[str, Any]:
    """Creates (or reads back) ``specs`` as parameters of the linen ``module``.

    Called from a compact method of ``module``: each :class:`Parameter` is
    ``module.param(name, ...)`` (created in the declaration's order) and each nested group
    a child scope of that name holding its own parameters.

    Returns:
      The values, a dict shaped like ``specs``.
    """
    values = {}
    for name, spec in specs.items():
        if isinstance(spec, Parameter):
            values[name] = module.param(name, spec.init, spec.shape, spec.dtype)
        else:
            values[name] = _LinenGroup(tuple(spec.items()), parent=module, name=name)()
    return values


class _LinenGroup(nn.Module):
    """A child scope holding a group of declared parameters (a wrapped encoding's)."""

    items: tuple[tuple[str, Any], ...]

    @nn.compact
    def __call__(self) -> dict[str, Any]:
        return linen_parameters(self, dict(self.items))
