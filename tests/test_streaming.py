"""StreamingLLM decoding (attention sinks) against a naive float64 reference of the policy.

The reference recomputes every step from scratch: the kept tokens are the first ``sinks``
and the ``recent`` latest (the current one included), numbered ``0 .. n - 1`` in order;
RoPE rotates each kept key and the query (the last, ``n - 1``) by those numbers; then
softmax over ``q.k / sqrt(K)`` and the output projection, in float64.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import posenc_jax as pj
from posenc_jax.attention import MultiHeadAttention, Streaming
from posenc_jax.train.decode import decode_step, init_cache

D, H, K, STEPS = 8, 2, 4, 11


def _rope(x, position):
    """Half-layout RoPE of ``x [H, K]`` at one position, float64."""
    half = x.shape[-1] // 2
    angle = position * 10000.0 ** (-np.arange(half) * 2 / x.shape[-1])
    first, second = x[:, :half], x[:, half:]
    cos, sin = np.cos(angle), np.sin(angle)
    return np.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def _reference(params, x, sinks, recent):
    p = {name: np.asarray(params[name]["kernel"], np.float64) for name in params}
    x = np.asarray(x, np.float64)[0]
    q = np.einsum("ld,dhk->lhk", x, p["query"])
    k = np.einsum("ld,dhk->lhk", x, p["key"])
    v = np.einsum("ld,dhk->lhk", x, p["value"])
    outputs = []
    for t in range(len(x)):
        kept = sorted(set(range(min(sinks, t + 1))) | set(range(max(0, t - recent + 1), t + 1)))
        keys = np.stack([_rope(k[j], slot) for slot, j in enumerate(kept)])  # [n, H, K]
        query = _rope(q[t], len(kept) - 1)
        logits = np.einsum("hk,nhk->hn", query, keys) / np.sqrt(K)
        weights = np.exp(logits - logits.max(axis=1, keepdims=True))
        weights /= weights.sum(axis=1, keepdims=True)
        heads = np.einsum("hn,nhk->hk", weights, v[kept])
        outputs.append(np.einsum("hk,hkd->d", heads, p["out"]))
    return np.stack(outputs)


@pytest.mark.parametrize(("sinks", "recent"), [(2, 3), (0, 4), (1, 1)])
def test_one_token_per_step_equals_the_naive_reference(rng, sinks, recent):
    layer = MultiHeadAttention(
        num_heads=H,
        causal=True,
        encoding=pj.encodings.get("rope"),
        decode=True,
        streaming=Streaming(sinks, recent),
    )
    x = jnp.asarray(rng.normal(size=(1, STEPS, D)), jnp.float32)
    variables = layer.init(jax.random.key(0), x[:, :1])
    params, cache = variables["params"], variables["cache"]
    outputs = []
    for t in range(STEPS):
        out, state = layer.apply(
            {"params": params, "cache": cache},
            x[:, t : t + 1],
            q_positions=jnp.asarray([[t + 40]]),  # positions in the text do not matter
            mutable=["cache"],
        )
        cache = state["cache"]
        outputs.append(np.asarray(out[0, 0]))
    np.testing.assert_allclose(np.stack(outputs), _reference(params, x, sinks, recent), atol=2e-5)
    assert cache["cached_key"].shape[1] == sinks + recent


def _decoder(streaming):
    cfg = pj.models.TransformerConfig(
        vocab_size=9, d_model=D, num_layers=2, num_heads=H, encoding=pj.encodings.get("alibi")
    )
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 9, (2, 9)), jnp.int32)
    params = pj.models.Transformer(cfg).init(jax.random.key(1), tokens)["params"]
    return dataclasses.replace(cfg, streaming=streaming), params, tokens


def test_a_prefill_that_fits_equals_one_token_at_a_time_and_nnx_agrees():
    """A bias encoding (ALiBi) reads the positions counted in the cache too; the NNX model
    with the linen parameters decodes to the same logits."""
    cfg, params, tokens = _decoder(Streaming(2, 4))
    positions = jnp.broadcast_to(jnp.arange(9), (2, 9))
    cache = init_cache(cfg, 2, 9)
    stepped = []
    for t in range(9):
        logits, cache = decode_step(
            cfg, params, cache, tokens[:, t : t + 1], positions[:, t : t + 1]
        )
        stepped.append(logits)
    stepped = jnp.concatenate(stepped, axis=1)
    cache = init_cache(cfg, 2, 9)
    prefill, cache = decode_step(cfg, params, cache, tokens[:, :5], positions[:, :5])
    np.testing.assert_allclose(prefill, stepped[:, :5], atol=2e-5)
    model = pj.nnx.load_linen_params(
        pj.nnx.Transformer(dataclasses.replace(cfg, decode=True), rngs=nnx.Rngs(0)), params
    )
    model.init_cache(2, 9)
    nnx_steps = [model(tokens[:, t : t + 1], positions[:, t : t + 1]) for t in range(9)]
    np.testing.assert_allclose(jnp.concatenate(nnx_steps, axis=1), stepped, atol=2e-5)
    # Beyond sinks + recent tokens, streaming differs from the full cache.
    full = pj.models.Transformer(dataclasses.replace(cfg, streaming=None)).apply(
        {"params": params}, tokens
    )
    np.testing.assert_allclose(stepped[:, :6], full[:, :6], atol=2e-5)
    assert np.abs(stepped[:, 6:] - full[:, 6:]).max() > 1e-4


def test_bad_streaming_settings_are_named():
    with pytest.raises(ValueError, match="recent must be an integer >= 1"):
        _decoder(Streaming(4, 0))
    layers = (pj.models.LayerSpec(window=4),)
    with pytest.raises(ValueError, match="without a window"):
        pj.models.TransformerConfig(
            vocab_size=5, num_layers=1, streaming=Streaming(1, 3), layers=layers
        )


@pytest.mark.parametrize("streaming", [None, Streaming(3, 6)])
def test_the_measurement_scores_a_cache_that_keeps_everything_as_the_full_pass(streaming):
    """experiments/streaming_sinks.py decodes teacher-forced
    (``train.decode.teacher_forced_logits``); with the full cache, or a streaming cache
    with room for every token (nothing evicted, positions in the cache = in the text),
    its per-step bits are the full pass's cross-entropy."""
    from experiments.streaming_sinks import teacher_forced_bits

    cfg, params, tokens = _decoder(None)
    logits = np.asarray(pj.models.Transformer(cfg).apply({"params": params}, tokens))
    logits = logits[:, :-1].astype(np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    want = -np.take_along_axis(log_probs, np.asarray(tokens)[:, 1:, None], axis=-1)[..., 0]
    config = dataclasses.replace(cfg, decode=True, streaming=streaming)
    got = teacher_forced_bits(config, params, tokens)
    np.testing.assert_allclose(got, want / np.log(2), atol=3e-5)


@pytest.mark.parametrize(
    "option", [{"attention_sink": True}, {"stick_breaking": pj.attention.StickBreaking()}]
)
def test_a_sink_logit_or_stick_breaking_attends_the_kept_tokens(rng, option):
    """Each step of a streaming layer with a learned sink logit or stick-breaking weights
    (which orders keys by position: the ring of recent slots wraps) equals the same layer
    without a cache run over the kept tokens at positions 0 .. n - 1."""
    sinks, recent = 2, 3

    def layer(decode):
        streaming = Streaming(sinks, recent) if decode else None
        return MultiHeadAttention(
            num_heads=H,
            causal=True,
            encoding=pj.encodings.get("rope"),
            decode=decode,
            streaming=streaming,
            **option,
        )

    x = jnp.asarray(rng.normal(size=(1, STEPS, D)), jnp.float32)
    variables = layer(True).init(jax.random.key(0), x[:, :1])
    params, cache = dict(variables["params"]), variables["cache"]
    if "sink_logits" in params:
        params["sink_logits"] = jnp.asarray([1.0, -0.5])  # a sink that takes weight
    for t in range(STEPS):
        out, state = layer(True).apply(
            {"params": params, "cache": cache},
            x[:, t : t + 1],
            q_positions=jnp.asarray([[t + 40]]),
            mutable=["cache"],
        )
        cache = state["cache"]
        kept = sorted(set(range(min(sinks, t + 1))) | set(range(max(0, t - recent + 1), t + 1)))
        want = layer(False).apply(
            {"params": params}, x[:, kept], q_positions=jnp.arange(len(kept))[None]
        )
        np.testing.assert_allclose(out[:, 0], want[:, -1], atol=2e-5, err_msg=f"step {t}")


def test_a_decay_term_is_refused_with_a_streaming_cache():
    """FoX's c_i - c_j sums the log decays of every token between a query and a key; a
    streaming cache evicts some of them, so both skins refuse the pair, before any cache
    is written."""
    x = jnp.zeros((1, 3, D))
    message = "decay term .* undefined over evicted tokens"
    layer = MultiHeadAttention(
        num_heads=H,
        causal=True,
        encoding=pj.encodings.get("fox"),
        decode=True,
        streaming=Streaming(2, 3),
    )
    with pytest.raises(ValueError, match=message):
        layer.init(jax.random.key(0), x)
    nnx_layer = pj.nnx.MultiHeadAttention(
        num_heads=H,
        in_features=D,
        causal=True,
        encoding=pj.encodings.get("fox"),
        decode=True,
        streaming=Streaming(2, 3),
        rngs=nnx.Rngs(0),
    )
    nnx_layer.init_cache(1, 3)
    with pytest.raises(ValueError, match=message):
        nnx_layer(x)
    # Without streaming the same layer decodes.
    plain = dataclasses.replace(layer, streaming=None)
    assert "cached_decay" in plain.init(jax.random.key(0), x)["cache"]
