"""A SHA-256 digest of a value's content: every attribute by its value, never its printed form.

Two values get the same digest exactly when they hold the same data, so a digest can name
files and records that another process must recognize (a run's checkpoints, an evaluation
set). Printed forms are not data: NumPy prints a long array with "..." (two different
arrays would collide) and Python prints a function with its memory address (the same run,
started again, would look like another one). So arrays are digested by their bytes,
functions by their code and the values they close over, and a value known only by a
printed form holding an address is refused.
"""

import dataclasses
import functools
import hashlib
import re
import types
from collections.abc import Mapping

import flax.linen as nn
import jax
import numpy as np

# Fields of a Flax module that place it in a tree of modules rather than define it.
_MODULE_PLACEMENT = ("parent",)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def content_digest(value) -> str:
    """The hex SHA-256 of ``value``'s content.

    Dataclasses (a task, a run spec) and Flax modules (encodings) by their fields, NumPy
    and JAX arrays by dtype, shape and bytes, mappings by their items in key order, lists
    and tuples item by item, functions by module, name, bytecode, constants, defaults and
    closed-over values (``functools.partial`` by its function and arguments), classes by
    their qualified name, numbers, strings and other plain values by type and ``repr``.
    A function's bytecode is Python's: another Python version digests it differently.

    Raises:
      TypeError: a value known only by a printed form that holds a memory address (it
        would digest differently in every process); make it a dataclass or a function.
    """
    digest = _Digest()
    _update(digest, value)
    return digest.sha256.hexdigest()


class _Digest:
    """A SHA-256 being fed, and the functions being digested (a recursive function
    closes over itself)."""

    def __init__(self):
        self.sha256 = hashlib.sha256()
        self.functions: set[int] = set()

    def update(self, data: bytes) -> None:
        self.sha256.update(data)


def _update(digest, value) -> None:
    if isinstance(value, nn.Module):  # a dataclass too, but its parent field is not data
        _update_fields(digest, value, skip=_MODULE_PLACEMENT)
    elif isinstance(value, np.ndarray | jax.Array):
        array = np.ascontiguousarray(value)
        digest.update(f"array|{array.dtype}|{array.shape}|".encode())
        digest.update(array.tobytes())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _update_fields(digest, value, skip=())
    elif isinstance(value, Mapping):
        digest.update(b"{")
        for key in sorted(value, key=repr):
            _update(digest, key)
            _update(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):
        digest.update(b"[")
        for item in value:
            _update(digest, item)
        digest.update(b"]")
    elif isinstance(value, type):
        digest.update(f"class:{value.__module__}.{value.__qualname__};".encode())
    elif callable(value) and not isinstance(value, np.generic):
        _update_callable(digest, value)
    else:
        _update_printed(digest, value)


def _update_fields(digest, value, *, skip: tuple[str, ...]) -> None:
    digest.update(f"{type(value).__module__}.{type(value).__qualname__}(".encode())
    for field in dataclasses.fields(value):
        if field.name in skip:
            continue
        digest.update(f"{field.name}=".encode())
        _update(digest, getattr(value, field.name))
    digest.update(b")")


def _update_callable(digest, function) -> None:
    if isinstance(function, functools.partial):
        digest.update(b"partial(")
        _update(digest, function.func)
        _update(digest, function.args)
        _update(digest, dict(function.keywords))
        digest.update(b")")
        return
    name = f"{getattr(function, '__module__', None)}.{getattr(function, '__qualname__', None)}"
    digest.update(f"function:{name}(".encode())
    if isinstance(function, types.MethodType):
        _update(digest, function.__self__)
        function = function.__func__
    if isinstance(function, types.FunctionType):
        if id(function) in digest.functions:  # recursion: named above
            digest.update(b"itself)")
            return
        digest.functions.add(id(function))
        _update_code(digest, function.__code__)
        _update(digest, function.__defaults__)
        _update(digest, function.__kwdefaults__)
        for cell in function.__closure__ or ():
            try:
                _update(digest, cell.cell_contents)
            except ValueError:  # a cell not yet filled
                digest.update(b"empty cell;")
        digest.functions.discard(id(function))
    elif hasattr(function, "__wrapped__"):  # jax.jit, functools.wraps
        _update(digest, function.__wrapped__)
    elif getattr(function, "__qualname__", None) is None:  # an object with __call__
        _update_printed(digest, function)
    # Anything else is a builtin, known by its module and name.
    digest.update(b")")


def _update_code(digest, code: types.CodeType) -> None:
    digest.update(b"code:")
    digest.update(code.co_code)
    digest.update(repr(code.co_names).encode())
    for constant in code.co_consts:
        if isinstance(constant, types.CodeType):
            _update_code(digest, constant)
        else:
            digest.update(f"{type(constant).__qualname__}:{constant!r};".encode())


def _update_printed(digest, value) -> None:
    printed = repr(value)
    if _ADDRESS.search(printed):
        raise TypeError(
            f"cannot digest {type(value).__qualname__} by content: it is known only by its "
            f"printed form {printed[:80]!r}, which holds a memory address (every process "
            "would digest it differently). Give it as a dataclass or a function."
        )
    digest.update(f"{type(value).__qualname__}:{printed};".encode())
