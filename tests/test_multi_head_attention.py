"""MultiHeadAttention: self / cross, causal, GQA, padding, hooks, and the classic properties."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import MultiHeadAttention


def _apply(module, x, *args, **kwargs):
    variables = module.init(jax.random.key(0), x, *args, **kwargs)
    return module.apply(variables, x, *args, **kwargs), variables


def test_cross_attention_with_different_lengths(rng):
    x = jnp.asarray(rng.standard_normal((2, 3, 16)), jnp.float32)
    memory = jnp.asarray(rng.standard_normal((2, 9, 16)), jnp.float32)
    out, variables = _apply(MultiHeadAttention(num_heads=4, num_kv_heads=2), x, memory)
    assert out.shape == (2, 3, 16)
    assert variables["params"]["key"]["kernel"].shape == (16, 2, 4)


def test_padding_mask_hides_keys(rng):
    x = jnp.asarray(rng.standard_normal((1, 5, 8)), jnp.float32)
    module = MultiHeadAttention(num_heads=2)
    padding = jnp.array([[True, True, True, False, False]])
    out, variables = _apply(module, x, padding_mask=padding)
    changed = x.at[:, 3:].set(100.0)
    # Queries 0..2 see only keys 0..2, whose inputs did not change.
    out_changed = module.apply(variables, changed, padding_mask=padding)
    np.testing.assert_allclose(out[:, :3], out_changed[:, :3], atol=1e-6)


@pytest.mark.parametrize(
    "name,equivariant", [("nope", True), ("sinusoidal", False), ("learned", False)]
)
def test_permutation_equivariance_needs_no_position(rng, name, equivariant):
    """Without position, permuting the tokens permutes an encoder layer's outputs the same way."""
    config = pj.models.TransformerConfig(
        vocab_size=20,
        architecture="encoder",
        d_model=16,
        num_layers=1,
        num_heads=2,
        encoding=pj.encodings.get(name, **({"max_length": 8} if name == "learned" else {})),
    )
    model = pj.models.Transformer(config)
    tokens = jnp.asarray(rng.permutation(20)[:8][None], jnp.int32)
    permutation = rng.permutation(8)
    variables = model.init(jax.random.key(1), tokens)
    out = model.apply(variables, tokens)
    out_permuted = model.apply(variables, tokens[:, permutation])
    error = float(jnp.max(jnp.abs(out_permuted - out[:, permutation])))
    if equivariant:
        assert error < 1e-5
    else:
        assert error > 1e-2


def test_causal_decoder_has_zero_gradient_from_the_future(rng):
    """The loss at position t does not depend on input embeddings after t."""
    config = pj.models.TransformerConfig(
        vocab_size=11,
        d_model=16,
        num_layers=2,
        num_heads=2,
        encoding=pj.encodings.get("sinusoidal"),
    )
    model = pj.models.Transformer(config)
    tokens = jnp.asarray(rng.integers(0, 11, (1, 9)), jnp.int32)
    variables = model.init(jax.random.key(0), tokens)
    t = 4

    def loss_at_t(perturbations):
        logits = model.apply({**variables, "perturbations": perturbations}, tokens)
        return jnp.sum(logits[0, t] ** 2)

    grads = jax.grad(loss_at_t)(variables["perturbations"])["decoder"]["input_embeddings"]
    assert np.all(grads[0, t + 1 :] == 0.0)
    assert np.all(np.abs(grads[0, : t + 1]).sum(-1) > 0)


def test_causal_only_encoding_used_bidirectionally_is_an_error():
    class CausalOnly(pj.encodings.PositionalEncoding):
        causal_only = True

    with pytest.raises(ValueError, match="causal attention only"):
        _apply(MultiHeadAttention(num_heads=2, encoding=CausalOnly()), jnp.ones((1, 3, 8)))


def test_heads_not_divisible_by_kv_heads_is_an_error():
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        _apply(MultiHeadAttention(num_heads=4, num_kv_heads=3), jnp.ones((1, 3, 8)))


def test_nnx_model_uses_the_encoding_through_the_bridge(rng):
    """An NNX model holds the linen attention (with RoPE-free sinusoidal input) via nnx.bridge."""
    from flax import nnx

    attention = nnx.bridge.ToNNX(
        MultiHeadAttention(num_heads=2, causal=True, encoding=pj.encodings.get("nope")),
        rngs=nnx.Rngs(0),
    )
    x = jnp.asarray(rng.standard_normal((1, 4, 8)), jnp.float32)
    nnx.bridge.lazy_init(attention, x)
    x = x + pj.functional.sinusoidal(jnp.arange(4), 8)[None]
    out = attention(x)
    assert out.shape == (1, 4, 8)
    # Causal: the first output depends only on the first token.
    out_changed = attention(x.at[:, 1:].add(1.0))
    np.testing.assert_allclose(out[:, 0], out_changed[:, 0], atol=1e-6)


def test_positions_beyond_int32_are_an_error_in_attention_too():
    """The layer casts positions to int32; 2^31 + 1 would wrap to -2^31 + 1 silently."""
    attention = MultiHeadAttention(num_heads=2, causal=True, encoding=pj.encodings.get("rope"))
    x = jnp.zeros((1, 4, 8))
    positions = np.arange(2**31 - 2, 2**31 + 2, dtype=np.uint32)[None]
    with pytest.raises(ValueError, match=r"q_positions must fit int32"):
        attention.init(jax.random.key(0), x, q_positions=positions)
