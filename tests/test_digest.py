"""Content digests: two values digest alike exactly when they hold the same data.

A digest names a run's checkpoints and an evaluation set, and decides whether a work dir
holds "another run". Printed forms are not data: NumPy summarizes a long array with "..."
(two different arrays would collide) and a function prints its memory address (the same
run, started again, would be refused as another one).
"""

import dataclasses
import functools
import subprocess
import sys
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax._digest import content_digest
from tests.specs import tiny_copy_spec


class _WithAttribute(nn.Module):
    """An encoding-like module whose attribute is any value."""

    value: Any = None

    def __call__(self, x):
        return x


def _long_arrays():
    first = np.zeros(5000, np.float32)
    second = first.copy()
    second[2500] = 1.0  # both print as "array([0., 0., 0., ..., 0., 0., 0.])"
    assert repr(first) == repr(second)
    return first, second


def test_modules_with_different_long_arrays_differ():
    first, second = _long_arrays()
    assert content_digest(_WithAttribute(first)) != content_digest(_WithAttribute(second))
    assert content_digest(_WithAttribute(first)) == content_digest(_WithAttribute(first.copy()))


def test_an_encodings_array_hyperparameter_is_digested_by_its_values():
    """LongRoPE's rescale factors, given as arrays (one per rotated pair)."""
    first, second = _long_arrays()
    encodings = [
        pj.encodings.get("rope_longrope", short_factor=factors, long_factor=factors)
        for factors in (first, second)
    ]
    specs = [tiny_copy_spec(encoding=encoding) for encoding in encodings]
    assert content_digest(specs[0]) != content_digest(specs[1])


def _scaled_init(stddev):
    return nn.initializers.normal(stddev)


def test_the_same_function_digests_alike_wherever_it_lives():
    """Two closures of one factory with the same arguments are the same data."""
    assert _scaled_init(0.02) is not _scaled_init(0.02)
    same = [content_digest(_WithAttribute(_scaled_init(0.02))) for _ in range(2)]
    assert same[0] == same[1]
    assert content_digest(_WithAttribute(_scaled_init(0.05))) != same[0]
    partials = [functools.partial(np.clip, a_min=0.0) for _ in range(2)]
    assert content_digest(partials[0]) == content_digest(partials[1])
    assert content_digest(partials[0]) != content_digest(functools.partial(np.clip, a_min=1.0))


def test_different_functions_digest_differently():
    def square(x):
        return x * x

    def cube(x):
        return x * x * x

    digests = {
        content_digest(_WithAttribute(f)) for f in (square, cube, jnp.tanh, jnp.sin, nn.gelu)
    }
    assert len(digests) == 5


_DIGEST_IN_A_NEW_PROCESS = """
import flax.linen as nn
import posenc_jax as pj
from posenc_jax._digest import content_digest
from tests.test_digest import _WithAttribute
value = (nn.initializers.normal(0.02), nn.gelu, pj.encodings.get("rope"))
print(content_digest(_WithAttribute(value)))
"""


def test_a_function_attribute_digests_alike_in_two_processes():
    """The same run started again: without addresses, the digest does not change."""
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST_IN_A_NEW_PROCESS],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for _ in range(2)
    }
    assert len(digests) == 1 and len(digests.pop()) == 64


def test_dictionaries_digest_by_content_in_any_order():
    first, second = _long_arrays()
    assert content_digest({"a": 1, "b": first}) == content_digest({"b": first.copy(), "a": 1})
    assert content_digest({"a": 1, "b": first}) != content_digest({"a": 1, "b": second})


def test_a_value_printed_with_its_address_is_refused():
    """An object known only by its printed form, which holds a memory address, cannot be
    digested by content: an error, not a digest that changes every run."""

    class Opaque:
        __slots__ = ()

    with pytest.raises(TypeError, match="cannot digest .*Opaque.*memory address"):
        content_digest(_WithAttribute(Opaque()))


@dataclasses.dataclass(frozen=True)
class _Settings:
    scale: float
    name: str


def test_dataclasses_numbers_and_strings_keep_their_meaning():
    assert content_digest(_Settings(1.0, "a")) == content_digest(_Settings(1.0, "a"))
    assert content_digest(_Settings(1.0, "a")) != content_digest(_Settings(1.5, "a"))
    assert content_digest(1) != content_digest(1.0) != content_digest("1")
    assert content_digest((1, 2)) != content_digest((12,))


def test_a_recursive_closure_is_digested():
    def make(depth):
        def walk(n):
            return n if n <= depth else walk(n - 1)

        return walk

    assert content_digest(make(1)) == content_digest(make(1)) != content_digest(make(2))
