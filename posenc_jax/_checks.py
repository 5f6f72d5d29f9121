"""Input validation shared by the package: clear errors that name the bad value."""

import os
import tempfile
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.typing import Array


def is_concrete(x) -> bool:
    """True when ``x`` holds values known now (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def is_integer(value) -> bool:
    """A Python or NumPy integer; a bool or a float such as 2.5 or 4.0 is not."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def check_positive_int(value, what: str) -> int:
    """``value`` as an int if it is a positive integer (Python or NumPy), else a ValueError
    naming ``what``."""
    if not is_integer(value) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}.")
    return int(value)


def check_int32_positions(positions, what: str) -> None:
    """Known positions of a wider integer type (int64, uint32) must fit int32, the type
    positions are computed in: a cast would wrap the rest silently (2^31 + 5 to -2^31 + 5)."""
    dtype = np.asarray(positions).dtype if isinstance(positions, list | tuple) else None
    dtype = getattr(positions, "dtype", dtype)
    if dtype is None or not np.issubdtype(dtype, np.integer):
        return
    info = np.iinfo(np.int32)
    if np.iinfo(dtype).max <= info.max and np.iinfo(dtype).min >= info.min:
        return
    if is_concrete(positions) and np.size(positions):
        values = np.asarray(positions)
        if values.min() < info.min or values.max() > info.max:
            raise ValueError(
                f"{what} must fit int32, got values in [{values.min()}, {values.max()}] "
                f"({dtype}); offset them (relative encodings see only differences)."
            )


def check_base(base: float, what: str) -> None:
    """A wavelength base (RoPE, sinusoid) must be finite and > 1: a base <= 1 gives NaN or
    constant frequencies."""
    if not (np.isfinite(base) and base > 1):
        raise ValueError(f"{what} base must be a finite number > 1, got {base!r}.")


def check_values(is_bad: Callable[..., Array], explain: Callable[..., str], *values: Array) -> None:
    """Raises ``ValueError(explain(*values))`` where ``is_bad(*values)``: now when the
    values are known, otherwise when the computation runs. Never skipped, never a clamp.

    Known values (outside ``jit``, or constants closed over by a jitted function) are
    checked at trace time and the ValueError reaches the caller as it is. Traced values
    are checked on the device, and only a bad one calls back to the host (a
    ``jax.debug.callback`` inside ``lax.cond``), which raises the same ValueError there;
    the caller gets a ``jax.errors.JaxRuntimeError`` whose message ends with it (README,
    "Errors"). A good value costs a comparison and no transfer: an unconditional callback
    made greedy decoding (one check per layer and step) 6x slower on CPU. Under ``vmap`` a
    batched ``cond`` would run both branches and report good values too, so the guard
    batches itself: it reports the first bad element of the batch (``custom_vmap``).

    Why not ``jax.experimental.checkify``: ``checkify.check`` works only inside a function
    its caller has wrapped in ``checkify.checkify``. Under plain ``jax.jit``, the way the
    package's modules are called, it fails to trace even on valid input, and its
    alternative ``checkify.debug_check`` is then skipped without a word. A library cannot
    ask every caller to wrap their step functions, and a skipped check is a silent clamp.
    The guard runs under ``jit``, ``grad``, ``vmap``, ``scan`` and ``checkify`` alike.

    Args:
      is_bad: ``is_bad(*values)`` -> a boolean scalar, written with operators that work
        on NumPy and JAX values alike (``<``, ``|``; not ``or``).
      explain: ``explain(*values)`` -> the message, given NumPy values; it names the bad
        value and what would be valid.
      values: JAX or NumPy scalars (a minimum, a maximum, a counter), so a failing check
        moves a few numbers to the host.
    """

    def fail(*found):
        raise ValueError(explain(*(np.asarray(value) for value in found)))

    if all(is_concrete(value) for value in values):
        known = [np.asarray(value) for value in values]
        if bool(is_bad(*known)):
            fail(*known)
        return
    _guard(fail)(jnp.asarray(is_bad(*values)), *values)


def _guard(fail: Callable[..., None]) -> Callable[..., Array]:
    """``guard(bad, *values)``: calls ``fail(*values)`` on the host when ``bad`` holds.

    Batched by hand: for a batch, the first element that is bad (if any) is reported.
    """

    def report(*values):
        jax.debug.callback(fail, *values)
        return jnp.zeros((), jnp.int32)

    @jax.custom_batching.custom_vmap
    def guard(bad, *values):
        return jax.lax.cond(bad, report, lambda *_: jnp.zeros((), jnp.int32), *values)

    @guard.def_vmap
    def first_bad_element(axis_size, in_batched, bad, *values):
        bad = bad if in_batched[0] else jnp.broadcast_to(bad, (axis_size,))
        first = jnp.argmax(bad)
        batched = in_batched[1:]
        values = [v[first] if b else v for v, b in zip(values, batched, strict=True)]
        return guard(jnp.any(bad), *values), False

    return guard


def check_positions_below(positions: Array, limit: int, what: str) -> None:
    """Raises ValueError if any position is >= ``limit`` or negative.

    Concrete positions are checked now (a ValueError at trace time), traced positions when
    the computation runs (:func:`check_values`): the values are never clamped into range.

    Args:
      positions: integer positions of any shape.
      limit: the number of positions the caller can represent.
      what: the name of the table or encoding, used in the message.
    """
    if positions.size == 0:
        return

    def explain(low, high):
        bad = low if low < 0 else high
        return (
            f"{what} was asked for position {bad}, but it represents positions 0..{limit - 1} "
            f"only. Use a larger size (at least {high + 1}) or an encoding defined for "
            "every position; positions are never clamped."
        )

    if is_concrete(positions):
        # Read known values on the host: inside a jit trace, even a jnp reduction of a
        # known array would be traced.
        positions = np.asarray(positions)
    check_values(
        lambda low, high: (low < 0) | (high >= limit),
        explain,
        positions.min(),
        positions.max(),
    )


def as_batched_positions(positions: Array | None, batch: int, length: int, name: str) -> Array:
    """Returns int32 positions ``[B, L]``: ``arange(L)`` when None, a ``[L]`` row broadcast.

    Raises:
      ValueError: if the positions do not have length ``length`` or are not integers.
    """
    if positions is None:
        return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    check_int32_positions(positions, name)
    positions = jnp.asarray(positions)
    if not jnp.issubdtype(positions.dtype, jnp.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {positions.dtype}.")
    if positions.ndim == 1:
        positions = jnp.broadcast_to(positions, (batch, positions.shape[0]))
    if positions.ndim != 2 or positions.shape != (batch, length):
        raise ValueError(
            f"{name} has shape {positions.shape}; expected [{length}] or [{batch}, {length}] "
            "to match the inputs."
        )
    return positions.astype(jnp.int32)


def check_writable_dir(path: str | os.PathLike, what: str = "work dir") -> str:
    """Creates ``path`` if needed and proves it writable by writing a file there.

    A permission bit says nothing for root and nothing about a full or read-only file
    system, so the check writes (and removes) a real file. Run it before any work whose
    results would go there, so an unwritable directory costs nothing.

    Args:
      path: the directory.
      what: how the directory is called in the error message.

    Returns:
      The absolute path.

    Raises:
      ValueError: naming the directory and the operating system's reason.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_probe_"):
            pass
    except OSError as error:
        raise ValueError(
            f"{what} {path!r} is not a writable directory ({error.strerror or error}); "
            "choose a directory you can create and write files in."
        ) from error
    return path
