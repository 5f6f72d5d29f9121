"""The registry and the absolute encodings' contracts."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from tests.reference import reference_sinusoidal


def test_absolute_family_is_registered():
    assert {"nope", "sinusoidal", "learned", "normalized", "integer"} <= set(pj.encodings.names())


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown encoding 'nonsense'.*sinusoidal"):
        pj.encodings.get("nonsense")


def test_unknown_hyperparameter_lists_accepted_ones():
    with pytest.raises(ValueError, match="unknown hyperparameter.*max_length"):
        pj.encodings.get("learned", max_len=4)


def _embed(encoding, x, positions):
    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, positions):
            return encoding.clone(parent=self, name="enc").embed(x, positions)

    variables = Model().init(jax.random.key(0), x, positions)
    return Model().apply(variables, x, positions), variables


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("name", ["nope", "sinusoidal", "learned", "normalized", "integer"])
def test_embed_keeps_shape_and_dtype(name, dtype):
    x = jnp.ones((2, 5, 8), dtype)
    out, _ = _embed(pj.encodings.get(name), x, jnp.broadcast_to(jnp.arange(5), (2, 5)))
    assert out.shape == x.shape and out.dtype == dtype


def test_sinusoidal_adds_the_paper_table():
    x = jnp.zeros((1, 6, 8))
    out, _ = _embed(pj.encodings.get("sinusoidal"), x, jnp.arange(6)[None])
    np.testing.assert_allclose(out[0], reference_sinusoidal(np.arange(6), 8), atol=1e-6)


def test_learned_adds_its_table_rows():
    x = jnp.zeros((1, 3, 4))
    positions = jnp.array([[2, 0, 5]])
    out, variables = _embed(pj.encodings.get("learned", max_length=6), x, positions)
    table = variables["params"]["enc"]["table"]
    np.testing.assert_array_equal(out[0], table[np.array([2, 0, 5])])


def test_learned_rejects_sequences_longer_than_its_table_at_trace_time():
    with pytest.raises(ValueError, match="max_length=4.*5 tokens"):
        _embed(pj.encodings.get("learned", max_length=4), jnp.zeros((1, 5, 4)), jnp.arange(5)[None])


def test_learned_rejects_a_concrete_position_past_its_table():
    with pytest.raises(ValueError, match="position 9.*0..5"):
        _embed(pj.encodings.get("learned", max_length=6), jnp.zeros((1, 2, 4)), jnp.array([[0, 9]]))


def test_learned_rejects_a_traced_position_past_its_table_when_run():
    encoding = pj.encodings.get("learned", max_length=6)
    x = jnp.zeros((1, 2, 4))
    _, variables = _embed(encoding, x, jnp.array([[0, 1]]))

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, positions):
            return encoding.clone(parent=self, name="enc").embed(x, positions)

    run = jax.jit(lambda p: Model().apply(variables, x, p))
    run(jnp.array([[0, 5]])).block_until_ready()  # in range: fine
    with pytest.raises(Exception, match="position 7"):
        run(jnp.array([[0, 7]])).block_until_ready()


def test_normalized_depends_on_sequence_length():
    """The same offset (one step) gets different values in sequences of different lengths."""
    encoding = pj.encodings.get("normalized")
    short, variables = _embed(encoding, jnp.zeros((1, 4, 4)), jnp.arange(4)[None])
    direction = variables["params"]["enc"]["direction"]
    np.testing.assert_allclose(short[0, 1], direction / 3, rtol=1e-6)

    class Model(nn.Module):
        @nn.compact
        def __call__(self, x, positions):
            return encoding.clone(parent=self, name="enc").embed(x, positions)

    longer = Model().apply(variables, jnp.zeros((1, 8, 4)), jnp.arange(8)[None])
    np.testing.assert_allclose(longer[0, 1], direction / 7, rtol=1e-6)


def test_integer_grows_with_position():
    out, v = _embed(pj.encodings.get("integer"), jnp.zeros((1, 3, 4)), jnp.array([[0, 10, 1000]]))
    direction = np.asarray(v["params"]["enc"]["direction"])
    np.testing.assert_allclose(out[0], np.outer([0, 10, 1000], direction), rtol=1e-6)
