"""Declared parameters as NNX state: an ``nnx.Param`` per name, groups as child modules.

The NNX side of :mod:`posenc_jax.encodings.parameters`: the same declarations
(:class:`~posenc_jax.encodings.parameters.Parameter`, by name) that linen modules create
lazily are created here at construction, as attributes of the module that declares them,
so a parameter's path in ``nnx.state`` is its path in the linen tree.
"""

from typing import Any

from flax import nnx

from posenc_jax.encodings.parameters import Parameter, Specs


def create_parameters(owner: nnx.Module, specs: Specs, rngs: nnx.Rngs) -> tuple[str, ...]:
    """Sets each declared parameter on ``owner`` (a group as a :class:`ParameterGroup`).

    Returns:
      The names set, for :func:`parameter_values`.

    Raises:
      ValueError: a name that is already an attribute of ``owner``.
    """
    for name, spec in specs.items():
        if hasattr(owner, name):
            raise ValueError(
                f"parameter {name!r} would replace the attribute {name!r} of "
                f"{type(owner).__name__}; give the parameter another name."
            )
        if isinstance(spec, Parameter):
            value = nnx.Param(spec.init(rngs.params(), spec.shape, spec.dtype))
        else:
            value = ParameterGroup(spec, rngs=rngs)
        setattr(owner, name, value)
    return tuple(specs)


def parameter_values(owner: nnx.Module, names: tuple[str, ...]) -> dict[str, Any]:
    """The values of ``owner``'s parameters ``names``, a dict shaped like their specs."""
    values = {}
    for name in names:
        value = getattr(owner, name)
        values[name] = value.values() if isinstance(value, ParameterGroup) else value[...]
    return values


class ParameterGroup(nnx.Module):
    """A group of declared parameters (a wrapped encoding's), one attribute each."""

    def __init__(self, specs: Specs, *, rngs: nnx.Rngs):
        self._names = create_parameters(self, specs, rngs)

    def values(self) -> dict[str, Any]:
        """The group's values, by name."""
        return parameter_values(self, self._names)
