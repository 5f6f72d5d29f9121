"""Layer specs and the named schedules of production models.

Each schedule's layer pattern is checked against the pattern its model's configuration
states (the Hugging Face configuration files cited in ``posenc_jax.models.schedules``),
and a config dict of each model type builds the same pattern through ``from_hf_config``.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import Window
from posenc_jax.models import LayerSpec, schedules


def _kinds(schedule):
    return [
        (type(spec.encoding).registry_name, spec.window and (spec.window.kind, spec.window.size))
        for spec in schedule
    ]


def test_llama4_irope_pattern():
    """Hugging Face Llama 4: no_rope_layers[i] = int((i + 1) % 4 != 0) (1 = RoPE), RoPE
    layers "chunked_attention" of 8192, NoPE layers full with the temperature tuning."""
    schedule = schedules.llama4_irope(8)
    rope = ("rope", ("chunked", 8192))
    assert _kinds(schedule) == [rope, rope, rope, ("nope", None)] * 2
    assert schedule[0].encoding.base == 500000.0
    assert schedule[3].temperature.kind == "log_floor" and schedule[0].temperature is None
    # The temperature: 1 + 0.1 ln(1 + floor((p + 1) / 8192)).
    factor = schedule[3].temperature(jnp.asarray([[0, 8190, 8191, 3 * 8192 - 1]]), 1)
    np.testing.assert_allclose(
        factor[0], [1.0, 1.0, 1 + 0.1 * np.log(2), 1 + 0.1 * np.log(4)], rtol=1e-6
    )


def test_gemma3_pattern():
    """Gemma 3: layer i is global iff (i + 1) % 6 == 0; local layers slide over 1024 keys
    with RoPE base 10,000, global ones attend everything with base 1,000,000."""
    schedule = schedules.gemma3(12)
    local = ("rope", ("sliding", 1024))
    assert _kinds(schedule) == ([local] * 5 + [("rope", None)]) * 2
    assert schedule[0].encoding.base == 10000.0 and schedule[5].encoding.base == 1e6


def test_smollm3_and_command_a_patterns():
    assert _kinds(schedules.smollm3(8)) == [("rope", None)] * 3 + [("nope", None)] + [
        ("rope", None)
    ] * 3 + [("nope", None)]
    assert schedules.smollm3(4)[0].encoding.base == 2e6
    sliding = ("rope", ("sliding", 4096))
    assert _kinds(schedules.command_a(8)) == [sliding] * 3 + [("nope", None)] + [sliding] * 3 + [
        ("nope", None)
    ]
    assert schedules.command_a(4)[0].encoding.layout == "interleaved"


def test_schedules_from_hugging_face_configs():
    llama4 = {
        "model_type": "llama4",
        "text_config": {
            "model_type": "llama4_text",
            "num_hidden_layers": 4,
            "head_dim": 8,
            "rope_theta": 500000.0,
            "no_rope_layers": [1, 0, 1, 1],  # an explicit list beats the interval
            "attention_chunk_size": 16,
            "floor_scale": 4,
            "attn_scale": 0.2,
        },
    }
    got = schedules.from_hf_config(llama4)
    assert (
        _kinds(got) == [("rope", ("chunked", 16)), ("nope", None)] + [("rope", ("chunked", 16))] * 2
    )
    assert got[1].temperature.floor_scale == 4 and got[1].temperature.scale == 0.2

    gemma3 = {
        "model_type": "gemma3_text",
        "num_hidden_layers": 6,
        "head_dim": 8,
        "sliding_window": 32,
        "rope_theta": 1e6,
        "rope_local_base_freq": 1e4,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
    }
    got = schedules.from_hf_config(gemma3)
    assert [spec.window and spec.window.size for spec in got] == [32] * 5 + [None]
    assert type(got[0].encoding).registry_name == "rope" and got[0].encoding.base == 1e4
    assert type(got[5].encoding).registry_name == "rope_pi" and got[5].encoding.factor == 8.0

    smollm3 = {"model_type": "smollm3", "num_hidden_layers": 8, "head_dim": 8, "rope_theta": 2e6}
    assert _kinds(schedules.from_hf_config(smollm3)) == _kinds(schedules.smollm3(8))

    cohere2 = {
        "model_type": "cohere2",
        "num_hidden_layers": 4,
        "head_dim": 8,
        "rope_theta": 50000.0,
        "layer_types": ["sliding_attention", "full_attention"] * 2,
        "sliding_window": 64,
    }
    got = schedules.from_hf_config(cohere2)
    assert _kinds(got) == [("rope", ("sliding", 64)), ("nope", None)] * 2
    assert got[0].encoding.base == 50000.0 and got[0].encoding.layout == "interleaved"

    with pytest.raises(ValueError, match="no layer schedule for model_type='llama'"):
        schedules.from_hf_config({"model_type": "llama", "num_hidden_layers": 2})
    with pytest.raises(ValueError, match="unknown schedule 'jamba'; valid: command_a"):
        schedules.get_schedule("jamba", 4)


def _config(**kwargs):
    return pj.models.TransformerConfig(
        vocab_size=11, d_model=16, num_layers=2, num_heads=2, mlp_dim=32, **kwargs
    )


def test_default_specs_are_the_model_as_before(rng):
    tokens = jnp.asarray(rng.integers(1, 11, (2, 7)), jnp.int32)
    plain = _config(encoding=pj.encodings.get("t5"))
    specced = dataclasses.replace(plain, layers=(LayerSpec(), LayerSpec()))
    params = pj.models.Transformer(plain).init(jax.random.key(0), tokens)
    np.testing.assert_array_equal(
        pj.models.Transformer(specced).apply(params, tokens),
        pj.models.Transformer(plain).apply(params, tokens),
    )


def test_a_layer_spec_chooses_that_layers_attention(rng):
    """The model's encoding embeds (sinusoidal) and every layer inherits it (no rotation,
    no bias); a spec giving layer 1 ALiBi and a window changes layer 1 only: the model is
    then the same as one whose encoding is ALiBi in that layer, with the sinusoid added once."""
    tokens = jnp.asarray(rng.integers(1, 11, (2, 9)), jnp.int32)
    base = _config(encoding=pj.encodings.get("sinusoidal"))
    hybrid = dataclasses.replace(
        base, layers=(LayerSpec(), LayerSpec(encoding=pj.encodings.get("alibi"), window=3))
    )
    params = pj.models.Transformer(base).init(jax.random.key(0), tokens)
    plain_logits = pj.models.Transformer(base).apply(params, tokens)
    hybrid_logits = pj.models.Transformer(hybrid).apply(params, tokens)
    assert not np.allclose(plain_logits, hybrid_logits, atol=1e-4)

    # Layer by layer by hand: layer 0 as in the base model, layer 1 with ALiBi and w = 3.
    from posenc_jax.attention import MultiHeadAttention

    captured = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if isinstance(context.module, MultiHeadAttention) and context.method_name == "__call__":
            captured[context.module.layer_index] = (context.module, args[0], out)
        return out

    with nn.intercept_methods(record):
        pj.models.Transformer(hybrid).apply(params, tokens)
    module, x, out = captured[1]
    assert module.window == Window(3) and type(module.encoding).registry_name == "alibi"
    layer_params = params["params"]["decoder"]["layer_1"]["self_attention"]
    by_hand = MultiHeadAttention(
        num_heads=2, causal=True, encoding=pj.encodings.get("alibi"), window=Window(3)
    ).apply({"params": layer_params}, x)
    np.testing.assert_allclose(out, by_hand, atol=1e-6)


def test_hybrid_schedule_trains_and_decodes(rng):
    """A RoPE / NoPE / sliding-window model: teacher forcing equals greedy decoding's
    logits through the cache (ring buffers on the windowed layers)."""
    from posenc_jax.train.decode import decode_step, init_cache

    layers = (
        LayerSpec(encoding=pj.encodings.get("rope"), window=Window(3)),
        LayerSpec(encoding=pj.encodings.get("nope")),
        LayerSpec(encoding=pj.encodings.get("rope"), window=Window(4, "chunked")),
    )
    config = dataclasses.replace(_config(), num_layers=3, layers=layers)
    tokens = jnp.asarray(rng.integers(1, 11, (2, 10)), jnp.int32)
    params = pj.models.Transformer(config).init(jax.random.key(0), tokens)["params"]
    full = pj.models.Transformer(config).apply({"params": params}, tokens)
    cache = init_cache(config, 2, 10)
    steps = []
    for t in range(10):
        logits, cache = decode_step(
            config, params, cache, tokens[:, t : t + 1], jnp.full((2, 1), t, jnp.int32)
        )
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=3e-5)


def test_bad_layer_specs_are_named():
    with pytest.raises(ValueError, match="layers has 3 specs but the stack"):
        _config(layers=(LayerSpec(),) * 3)
    with pytest.raises(ValueError, match="LayerSpec attention='flash'"):
        LayerSpec(attention="flash")
    with pytest.raises(ValueError, match="must be a PositionalEncoding"):
        LayerSpec(encoding="rope")
    with pytest.raises(ValueError, match="decode=True needs attention='multi_head'"):
        _config(layers=(LayerSpec(), LayerSpec(attention="multi_token")), decode=True)
