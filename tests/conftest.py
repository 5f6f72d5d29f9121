"""Test-wide settings: rank promotion raises, so silent broadcasting bugs surface; the
Hypothesis profiles of the property-based tests.

Hypothesis profiles (``pytest --hypothesis-profile=NAME``):

* ``ci`` (the default): derandomized, so every run draws the same cases; sized to the
  suite's budget (tests/test_attention_fuzz.py: two examples of 24 calls per registered
  encoding and two of 32 per embedding, 1,696 cases for 30 encodings).
* ``long``: ten times the examples, a fresh random search each run, for a local hunt.
"""

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

jax.config.update("jax_numpy_rank_promotion", "raise")

# Each example compiles a program and runs many calls; its time is not a health problem.
_SLOW_EXAMPLES = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "ci",
    max_examples=2,
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_EXAMPLES,
)
settings.register_profile(
    "long",
    max_examples=20,
    deadline=None,
    print_blob=True,
    suppress_health_check=_SLOW_EXAMPLES,
)
settings.load_profile("ci")


@pytest.fixture
def rng():
    return np.random.default_rng(0)
