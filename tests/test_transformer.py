"""The Transformer's three architectures and its configuration errors."""

import jax
import jax.numpy as jnp
import pytest

import posenc_jax as pj


@pytest.mark.parametrize("architecture", ["decoder", "encoder", "encoder_decoder"])
@pytest.mark.parametrize("name", ["nope", "sinusoidal", "learned", "normalized", "integer"])
def test_every_architecture_runs_every_absolute_encoding(architecture, name):
    config = pj.models.TransformerConfig(
        vocab_size=13,
        architecture=architecture,
        d_model=16,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        encoding=pj.encodings.get(name),
    )
    model = pj.models.Transformer(config)
    tokens = jnp.ones((2, 6), jnp.int32)
    extra = {"source": jnp.ones((2, 9), jnp.int32)} if architecture == "encoder_decoder" else {}
    variables = model.init(jax.random.key(0), tokens, **extra)
    logits = jax.jit(lambda v, t: model.apply(v, t, **extra))(variables, tokens)
    assert logits.shape == (2, 6, 13) and logits.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(logits)))


def test_bfloat16_compute():
    config = pj.models.TransformerConfig(
        vocab_size=7,
        d_model=16,
        num_heads=2,
        dtype="bfloat16",
        encoding=pj.encodings.get("sinusoidal"),
    )
    model = pj.models.Transformer(config)
    tokens = jnp.ones((1, 5), jnp.int32)
    variables = model.init(jax.random.key(0), tokens)
    assert jax.tree.leaves(variables["params"])[0].dtype == jnp.float32
    assert model.apply(variables, tokens).shape == (1, 5, 7)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"architecture": "rnn"}, "architecture='rnn'"),
        ({"d_model": 10, "num_heads": 4}, "divisible by num_heads"),
        ({"num_heads": 4, "num_kv_heads": 3}, "multiple of num_kv_heads"),
        ({"num_layers": 0}, "num_layers must be positive"),
        ({"dtype": "float16"}, "dtype='float16'"),
        ({"encoding": "rope"}, "must be a PositionalEncoding"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        pj.models.TransformerConfig(vocab_size=5, **kwargs)


def test_encoder_decoder_needs_source_and_others_refuse_it():
    tokens = jnp.ones((1, 4), jnp.int32)
    model = pj.models.Transformer(
        pj.models.TransformerConfig(vocab_size=5, architecture="encoder_decoder")
    )
    with pytest.raises(ValueError, match="needs source"):
        model.init(jax.random.key(0), tokens)
    model = pj.models.Transformer(pj.models.TransformerConfig(vocab_size=5))
    with pytest.raises(ValueError, match="only used by encoder_decoder"):
        model.init(jax.random.key(0), tokens, source=tokens)
    with pytest.raises(ValueError, match="integer"):
        model.init(jax.random.key(0), jnp.ones((1, 4)))
