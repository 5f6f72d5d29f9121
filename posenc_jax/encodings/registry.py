"""Registry of encodings by name: ``names()``, ``get(name, **kwargs)``, ``register``."""

import inspect

from posenc_jax.encodings.base import PositionalEncoding

_REGISTRY: dict[str, type[PositionalEncoding]] = {}


def register(name: str):
    """Class decorator that registers an encoding under ``name``."""

    def decorate(cls: type[PositionalEncoding]) -> type[PositionalEncoding]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"encoding name {name!r} is already registered to {_REGISTRY[name]}.")
        _REGISTRY[name] = cls
        cls.registry_name = name
        return cls

    return decorate


def names() -> list[str]:
    """Every registered encoding name, sorted."""
    return sorted(_REGISTRY)


def get_class(name: str) -> type[PositionalEncoding]:
    """The encoding class registered under ``name``; ValueError listing the valid names."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown encoding {name!r}; valid names: {', '.join(names())}.")
    return _REGISTRY[name]


def get(name: str, **kwargs) -> PositionalEncoding:
    """Builds the encoding registered under ``name`` with hyperparameters ``kwargs``.

    Raises:
      ValueError: for an unknown name (the message lists the valid ones) or a keyword the
        encoding does not take (the message lists the ones it does).
    """
    cls = get_class(name)
    accepted = hyperparameters(cls)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"encoding {name!r} got unknown hyperparameter(s) {unknown}; "
            f"it accepts: {', '.join(accepted) or 'none'}."
        )
    return cls(**kwargs)


def hyperparameters(cls: type[PositionalEncoding]) -> dict[str, object]:
    """The constructor keywords of an encoding class and their defaults."""
    skip = {"parent", "name"}
    params = inspect.signature(cls).parameters
    return {k: p.default for k, p in params.items() if k not in skip}
