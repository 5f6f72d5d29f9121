"""A SHA-256 digest of a value's content: dataclasses field by field, arrays by their bytes.

Two values get the same digest exactly when they hold the same data, whatever Python's
hashing or ``repr``'s summarizing of long arrays; so a digest can name files and records
that another process must recognize (a run's checkpoints, an evaluation set).
"""

import dataclasses
import hashlib

import flax.linen as nn
import jax
import numpy as np


def content_digest(value) -> str:
    """The hex SHA-256 of ``value``: dataclasses (a task, a run spec) by their fields, NumPy
    and JAX arrays by dtype, shape and bytes, Flax modules (encodings) by their attributes,
    lists and tuples item by item, anything else by its type and ``repr``."""
    digest = hashlib.sha256()
    _update(digest, value)
    return digest.hexdigest()


def _update(digest, value) -> None:
    if isinstance(value, nn.Module):  # a dataclass too, but its parent field is not data
        digest.update(repr(value).encode())
    elif isinstance(value, np.ndarray | jax.Array):
        array = np.ascontiguousarray(value)
        digest.update(f"array|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"{type(value).__qualname__}(".encode())
        for field in dataclasses.fields(value):
            digest.update(f"{field.name}=".encode())
            _update(digest, getattr(value, field.name))
        digest.update(b")")
    elif isinstance(value, list | tuple):
        digest.update(b"[")
        for item in value:
            _update(digest, item)
        digest.update(b"]")
    else:
        digest.update(f"{type(value).__qualname__}:{value!r};".encode())
