"""Parameters between a linen tree and an NNX module of the same model, both ways.

The NNX modules of this package hold their parameters under the linen modules' names, so
a parameter's linen path is its attribute path. A parameter an NNX model holds in several
places (an encoding shared by a stack's layers) has the path of its outermost holder,
which is where linen binds it (the stack's ``position_encoding``).
"""

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

Path = tuple[str, ...]


def linen_params(module: nnx.Module) -> dict[str, Any]:
    """The linen parameter tree of ``module``'s ``nnx.Param`` values.

    ``linen_model.apply({"params": linen_params(nnx_model)}, ...)`` computes what
    ``nnx_model(...)`` computes.

    Args:
      module: an NNX module of this package (or a model built of them).

    Returns:
      Nested dicts of arrays, keyed as the linen module's ``params`` collection.
    """
    tree: dict[str, Any] = {}
    for path, variable in _parameters(module).items():
        node = tree
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = variable[...]
    return tree


def load_linen_params(module: nnx.Module, params: Any) -> nnx.Module:
    """Sets ``module``'s parameters to a linen model's, in place.

    Args:
      module: an NNX module of this package, built with the linen model's configuration.
      params: the linen parameter tree (``variables["params"]``), or the variables dict
        ``init`` returns (its ``"params"`` entry is used).

    Returns:
      ``module``.

    Raises:
      ValueError: when the trees differ: the message lists the paths only one side has
        and the parameters whose shapes differ.
    """
    targets = _parameters(module)
    if (
        isinstance(params, dict)
        and "params" in params
        and ("params",) not in {path[:1] for path in targets}
    ):
        params = params["params"]
    given = {
        tuple(str(getattr(key, "key", key)) for key in path): value
        for path, value in jax.tree_util.tree_flatten_with_path(params)[0]
    }
    problems = []
    missing = sorted(set(targets) - set(given))
    extra = sorted(set(given) - set(targets))
    if missing:
        problems.append("missing from the linen tree: " + ", ".join(map("/".join, missing)))
    if extra:
        problems.append("not in the NNX module: " + ", ".join(map("/".join, extra)))
    for path in sorted(set(targets) & set(given)):
        want, got = targets[path][...].shape, jnp.shape(given[path])
        if want != got:
            problems.append(f"{'/'.join(path)} has shape {got}, the NNX module {want}")
    if problems:
        raise ValueError(
            "the linen parameters do not fit this NNX module (build it with the linen "
            "model's configuration): " + "; ".join(problems) + "."
        )
    for path, variable in targets.items():
        variable[...] = jnp.asarray(given[path], variable[...].dtype)
    return module


def _parameters(module: nnx.Module) -> dict[Path, nnx.Param]:
    """Every ``nnx.Param`` of ``module`` under its shortest attribute path (the first in
    sorted order among paths of one length)."""
    best: dict[int, tuple[Path, nnx.Param]] = {}

    def visit(node: nnx.Module, path: Path, ancestors: frozenset) -> None:
        for name, value in sorted(vars(node).items()):
            here = (*path, name)
            if isinstance(value, nnx.Param):
                known = best.get(id(value))
                if known is None or (len(here), here) < (len(known[0]), known[0]):
                    best[id(value)] = (here, value)
            elif isinstance(value, nnx.Module) and id(value) not in ancestors:
                visit(value, here, ancestors | {id(value)})

    visit(module, (), frozenset({id(module)}))
    return dict(best.values())
