"""The Flax NNX modules against the linen ones, and NNX training.

The two skins share every computation, so the checks are: the NNX module given the linen
module's parameters (converted by ``load_linen_params``) gives the linen module's outputs
to float32 rounding, for every registered encoding (the registry is walked, so a new
encoding cannot skip this), for Multi-Token Attention, each architecture and decoding with
a cache; ``linen_params`` converts back to the linen tree, value for value. Then an NNX
model trains under ``nnx.jit`` with ``nnx.Optimizer``, restores from an Orbax checkpoint of
its ``nnx.state``, and trains several seeds at once under ``nnx.vmap``.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import posenc_jax as pj
from posenc_jax.train.decode import decode_step, init_cache

TOL = {"rtol": 1e-6, "atol": 1e-6}
VOCAB, WIDTH, HEADS, LENGTH, BATCH = 7, 8, 2, 5, 2

#: Hyperparameters beyond the defaults that a registered encoding is also checked with:
#: a randomized wrapper around encodings with parameters (they live under "wrapped").
EXTRA_CASES = [
    ("randomized", {"base": "t5"}),
    ("randomized", {"base": "learned", "base_kwargs": {"max_length": 16}}),
]


def tokens_of(seed: int, length: int = LENGTH, batch: int = BATCH):
    return jnp.asarray(np.random.default_rng(seed).integers(0, VOCAB, (batch, length)), jnp.int32)


def config(encoding="nope", **overrides) -> pj.models.TransformerConfig:
    if isinstance(encoding, str):
        encoding = pj.encodings.get(encoding)
    fields = {
        "vocab_size": VOCAB,
        "d_model": WIDTH,
        "num_layers": 1,
        "num_heads": HEADS,
        "mlp_dim": 16,
        "encoding": encoding,
    }
    return pj.models.TransformerConfig(**{**fields, **overrides})


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_models_agree(cfg, tokens, **call):
    """The linen model's logits == the NNX model's, given the linen parameters; and the
    NNX model's parameters convert back to the same linen tree."""
    linen_model = pj.models.Transformer(cfg)
    variables = linen_model.init(jax.random.key(0), tokens, **call)
    want = linen_model.apply(variables, tokens, **call)
    model = pj.nnx.Transformer(cfg, rngs=nnx.Rngs(1))
    assert pj.nnx.load_linen_params(model, variables) is model
    np.testing.assert_allclose(model(tokens, **call), want, **TOL)
    assert_trees_equal(pj.nnx.linen_params(model), variables["params"])
    return model, variables


def registered_cases():
    cases = [(name, {}) for name in pj.encodings.names()]
    return cases + EXTRA_CASES


@pytest.mark.parametrize(
    ("name", "hyperparameters"),
    registered_cases(),
    ids=[f"{n}{'-' + str(k.get('base')) if k else ''}" for n, k in registered_cases()],
)
def test_every_registered_encoding_gives_the_linen_outputs(name, hyperparameters):
    """A decoder with the encoding, at positions other than arange and with a padded
    example (the length-dependent encodings read each example's own length)."""
    encoding = pj.encodings.get(name, **hyperparameters)
    positions = jnp.asarray([[0, 1, 2, 3, 4], [3, 5, 6, 9, 11]], jnp.int32)
    padding = jnp.asarray([[True] * 5, [True, True, True, False, False]])
    assert_models_agree(config(encoding), tokens_of(0), positions=positions, padding_mask=padding)


class LearnedALiBi(pj.encodings.PositionalEncoding):
    """DESIGN.md's example of a new encoding: ALiBi with learned slopes."""

    def attention_parameters(self, dims):
        def init(key, shape, dtype=jnp.float32):
            return pj.functional.alibi_slopes(shape[0]).astype(dtype)

        return {"slopes": pj.encodings.Parameter((dims.num_heads,), init)}

    def bias_fn_with(self, params, *, num_heads, causal, context=None):
        slopes = params["slopes"]
        return lambda q_positions, k_positions: pj.functional.alibi_bias(
            slopes, q_positions, k_positions
        )


def test_a_new_encoding_written_once_runs_in_both(rng):
    """Declarations and a pure hook are all it takes: the linen layer makes its slopes
    lazily, the NNX layer at construction, and they compute the same attention (the
    slopes moved off their start, so that the parameters are seen to be used)."""
    x = jnp.asarray(rng.normal(size=(BATCH, LENGTH, WIDTH)), jnp.float32)
    linen_layer = pj.attention.MultiHeadAttention(
        num_heads=HEADS, causal=True, encoding=LearnedALiBi()
    )
    params = linen_layer.init(jax.random.key(0), x)["params"]
    np.testing.assert_allclose(
        params["position_encoding"]["slopes"], pj.functional.alibi_slopes(HEADS)
    )
    params["position_encoding"]["slopes"] = jnp.asarray([0.9, 0.05], jnp.float32)
    layer = pj.nnx.MultiHeadAttention(
        num_heads=HEADS, in_features=WIDTH, causal=True, encoding=LearnedALiBi(), rngs=nnx.Rngs(0)
    )
    pj.nnx.load_linen_params(layer, params)
    want = linen_layer.apply({"params": params}, x)
    np.testing.assert_allclose(layer(x), want, **TOL)
    with_start = linen_layer.apply({"params": linen_layer.init(jax.random.key(0), x)["params"]}, x)
    assert not np.allclose(want, with_start)


def test_the_nnx_encodings_are_the_registrys():
    assert pj.nnx.encodings.names() == pj.encodings.names()
    assert pj.nnx.encodings.get("t5", num_buckets=8) == pj.encodings.get("t5", num_buckets=8)
    with pytest.raises(ValueError, match="unknown encoding 'rotary'"):
        pj.nnx.encodings.get("rotary")


@pytest.mark.parametrize("architecture", ["decoder", "encoder", "encoder_decoder"])
def test_each_architecture_gives_the_linen_outputs(architecture):
    """Two layers, grouped key/value heads, a bias encoding with parameters; the
    encoder-decoder with a decoder of another depth and a padded source."""
    cfg = config(
        "t5",
        architecture=architecture,
        num_layers=2,
        num_decoder_layers=1,
        num_heads=4,
        num_kv_heads=2,
    )
    call = {}
    if architecture == "encoder_decoder":
        call = {
            "source": tokens_of(1, length=6),
            "source_padding_mask": jnp.asarray([[True] * 6, [True] * 4 + [False] * 2]),
        }
    assert_models_agree(cfg, tokens_of(2), **call)


def test_an_encoding_shared_across_layers_sits_at_the_stack_in_both():
    cfg = config("t5", num_layers=3, share_encoding_across_layers=True)
    model, variables = assert_models_agree(cfg, tokens_of(3))
    table = variables["params"]["decoder"]["position_encoding"]["relative_attention_bias"]
    # One table, read by every layer of the NNX model.
    for i in range(3):
        layer = getattr(model.decoder, f"layer_{i}").self_attention
        assert layer.position_encoding is model.decoder.position_encoding
    np.testing.assert_array_equal(
        model.decoder.position_encoding.relative_attention_bias[...], table
    )


def test_layer_specs_give_the_linen_outputs():
    """Per-layer encodings, a sliding window and a Multi-Token layer in one stack."""
    layers = (
        pj.models.LayerSpec(encoding=pj.encodings.get("fire", mlp_width=4), window=2),
        pj.models.LayerSpec(encoding=pj.encodings.get("nope")),
        pj.models.LayerSpec(
            attention="multi_token", mta=pj.attention.MTAConfig(pre_softmax_kernel=(2, 3))
        ),
    )
    assert_models_agree(config("rope", num_layers=3, layers=layers), tokens_of(4))


MTA_CONFIGS = [
    pj.attention.MTAConfig(
        pre_softmax_kernel=(2, 3),
        post_softmax_kernel=(2, 3),
        pre_softmax_head_group=2,
        post_softmax_head_group=2,
        group_norm="gate",
    ),
    pj.attention.MTAConfig(group_norm="depth", conv_layers=(1,)),
]


@pytest.mark.parametrize("mta", MTA_CONFIGS, ids=["every_component", "depth_norm"])
def test_multi_token_attention_gives_the_linen_outputs(mta, rng):
    """The model with MTA layers; and the layer alone, its learned maps perturbed away
    from the identity they start at (so a mixed-up kernel would show)."""
    cfg = config("alibi", attention="multi_token", mta=mta, num_layers=2)
    assert_models_agree(cfg, tokens_of(5))

    layer_args = {"num_heads": HEADS, "causal": True, "config": mta, "layer_index": 1}
    x = jnp.asarray(rng.normal(size=(BATCH, LENGTH, WIDTH)), jnp.float32)
    linen_layer = pj.attention.MultiTokenAttention(**layer_args)
    params = linen_layer.init(jax.random.key(0), x)["params"]
    params = jax.tree.map(lambda p: p + 0.1 * rng.normal(size=p.shape), params)
    layer = pj.nnx.MultiTokenAttention(in_features=WIDTH, rngs=nnx.Rngs(0), **layer_args)
    pj.nnx.load_linen_params(layer, params)
    np.testing.assert_allclose(layer(x), linen_layer.apply({"params": params}, x), **TOL)


def test_cross_attention_with_other_widths_and_a_window(rng):
    x = jnp.asarray(rng.normal(size=(BATCH, 4, WIDTH)), jnp.float32)
    context = jnp.asarray(rng.normal(size=(BATCH, 6, 12)), jnp.float32)
    args = {"num_heads": 4, "num_kv_heads": 1, "head_dim": 3, "out_features": 5, "window": 3}
    linen_layer = pj.attention.MultiHeadAttention(use_bias=True, **args)
    variables = linen_layer.init(jax.random.key(0), x, context)
    layer = pj.nnx.MultiHeadAttention(
        in_features=WIDTH, in_kv_features=12, use_bias=True, rngs=nnx.Rngs(0), **args
    )
    pj.nnx.load_linen_params(layer, variables)
    np.testing.assert_allclose(layer(x, context), linen_layer.apply(variables, x, context), **TOL)


def test_decoding_with_a_cache_gives_the_linen_logits():
    """A prefill of 3 tokens, then one token per call, in the linen decoder (cache
    collection) and the NNX one (nnx.Cache variables): the same logits at every step.
    Layer 0 rotates (RoPE) and keeps a ring buffer of 3 keys; layer 1 has a bias (ALiBi)
    and a full cache; the model's encoding embeds (a learned table)."""
    layers = (
        pj.models.LayerSpec(encoding=pj.encodings.get("rope"), window=3),
        pj.models.LayerSpec(encoding=pj.encodings.get("alibi")),
    )
    cfg = config(pj.encodings.get("learned", max_length=8), num_layers=2, layers=layers)
    tokens = tokens_of(6, length=7)
    params = pj.models.Transformer(cfg).init(jax.random.key(0), tokens)["params"]
    model = pj.nnx.load_linen_params(
        pj.nnx.Transformer(dataclasses.replace(cfg, decode=True), rngs=nnx.Rngs(0)), params
    )
    model.init_cache(BATCH, 7)
    cache = init_cache(cfg, BATCH, 7)
    positions = jnp.broadcast_to(jnp.arange(7), (BATCH, 7))
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 6), (6, 7)]:
        chunk, at = tokens[:, start:stop], positions[:, start:stop]
        want, cache = decode_step(cfg, params, cache, chunk, at)
        np.testing.assert_allclose(model(chunk, at), want, **TOL)
    # The caches themselves: NNX holds linen's arrays, under linen's names.
    for i in range(2):
        layer = getattr(model.decoder, f"layer_{i}").self_attention
        linen_cache = cache["decoder"][f"layer_{i}"]["self_attention"]
        assert linen_cache["cached_key"].shape[1] == (3 if i == 0 else 7)
        for name in ("cached_key", "cached_value", "cached_positions", "cache_index"):
            np.testing.assert_allclose(getattr(layer, name)[...], linen_cache[name], **TOL)


def test_decoding_under_nnx_jit_equals_the_full_pass():
    """One token per compiled step, the cache carried in the model's nnx.Cache variables:
    the logits of the full pass, and the cache index counts the tokens."""
    cfg = config("rope", num_layers=1, decode=True)
    model = pj.nnx.Transformer(cfg, rngs=nnx.Rngs(0))
    full = pj.nnx.Transformer(dataclasses.replace(cfg, decode=False), rngs=nnx.Rngs(0))
    model.init_cache(BATCH, LENGTH)
    tokens = tokens_of(10)
    step = nnx.jit(lambda model, token, at: model(token, at))
    logits = [
        step(model, tokens[:, t : t + 1], jnp.full((BATCH, 1), t, jnp.int32)) for t in range(LENGTH)
    ]
    np.testing.assert_allclose(jnp.concatenate(logits, axis=1), full(tokens), rtol=1e-5, atol=1e-5)
    assert int(model.decoder.layer_0.self_attention.cache_index[...]) == LENGTH


def test_encoder_decoder_decodes_like_linen():
    cfg = config("t5", architecture="encoder_decoder", num_layers=1)
    source, tokens = tokens_of(7, length=4), tokens_of(8, length=3)
    params = pj.models.Transformer(cfg).init(jax.random.key(0), tokens, source=source)["params"]
    model = pj.nnx.load_linen_params(
        pj.nnx.Transformer(dataclasses.replace(cfg, decode=True), rngs=nnx.Rngs(0)), params
    )
    model.init_cache(BATCH, 3)
    cache = init_cache(cfg, BATCH, 3, source=source)
    for t in range(3):
        at = jnp.full((BATCH, 1), t, jnp.int32)
        want, cache = decode_step(cfg, params, cache, tokens[:, t : t + 1], at, source=source)
        np.testing.assert_allclose(model(tokens[:, t : t + 1], at, source=source), want, **TOL)


def test_nnx_parameters_run_in_linen():
    """The other direction: an NNX model's own initialization, converted to a linen tree,
    gives the NNX model's logits in linen."""
    cfg = config("fire", num_layers=2)
    model = pj.nnx.Transformer(cfg, rngs=nnx.Rngs(3))
    tokens = tokens_of(9)
    linen_out = pj.models.Transformer(cfg).apply({"params": pj.nnx.linen_params(model)}, tokens)
    np.testing.assert_allclose(model(tokens), linen_out, **TOL)


def test_a_tree_of_another_model_is_refused_with_the_paths():
    params = pj.models.Transformer(config("t5")).init(jax.random.key(0), tokens_of(0))
    extra = "not in the NNX module: decoder/layer_0/self_attention/position_encoding/relative"
    with pytest.raises(ValueError, match=extra):
        pj.nnx.load_linen_params(pj.nnx.Transformer(config("alibi"), rngs=nnx.Rngs(0)), params)
    wider = pj.nnx.Transformer(config("t5", d_model=12), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"token_embedding/embedding has shape \(7, 8\)"):
        pj.nnx.load_linen_params(wider, params)


# --- errors ---------------------------------------------------------------------------------


def test_a_linen_only_encoding_is_refused_by_nnx_with_what_to_do():
    class TableBias(pj.encodings.PositionalEncoding):
        def _bias_fn(self, *, num_heads, causal, context=None):
            table = self.param("table", nn.initializers.normal(1.0), (num_heads, 3))
            return lambda q_positions, k_positions: table[:, None, None, :1]

    with pytest.raises(ValueError, match="bias_fn for linen only.*bias_fn_with"):
        pj.nnx.MultiHeadAttention(
            num_heads=2, in_features=WIDTH, encoding=TableBias(), rngs=nnx.Rngs(0)
        )
    with pytest.raises(ValueError, match="randomized wraps encodings defined by"):
        pj.encodings.get("randomized", base=TableBias())


def test_nnx_errors_name_the_value_and_the_fix():
    rngs = nnx.Rngs(0)
    with pytest.raises(ValueError, match="causal attention only"):
        pj.nnx.MultiHeadAttention(
            num_heads=2, in_features=WIDTH, encoding=pj.encodings.get("xpos"), rngs=rngs
        )
    with pytest.raises(ValueError, match="needs head_dim"):
        pj.nnx.Encoding(pj.encodings.get("shaw"), num_heads=2, rngs=rngs)
    t5 = pj.nnx.Encoding(pj.encodings.get("t5"), num_heads=2, rngs=rngs)
    with pytest.raises(ValueError, match="built for num_heads=2 but is called with num_heads=4"):
        t5.bias_fn(num_heads=4, causal=True)
    layer = pj.nnx.MultiHeadAttention(
        num_heads=2, in_features=WIDTH, causal=True, decode=True, rngs=rngs
    )
    with pytest.raises(ValueError, match="call init_cache"):
        layer(jnp.ones((1, 2, WIDTH)))
    with pytest.raises(ValueError, match=r"takes inputs of width \(8,\), got \(6,\)"):
        pj.nnx.MultiHeadAttention(num_heads=2, in_features=WIDTH, rngs=rngs)(jnp.ones((1, 2, 6)))


def test_a_dimension_the_linen_bias_hook_is_not_told_is_an_error():
    """A bias whose parameters need the head dim, called through linen's bias_fn hook
    (told the head count only): an error naming the dimension, not a wrong shape."""

    class PerFeature(pj.encodings.PositionalEncoding):
        def attention_parameters(self, dims):
            return {"w": pj.encodings.Parameter((dims.head_dim,), nn.initializers.ones)}

        def bias_fn_with(self, params, *, num_heads, causal, context=None):
            return lambda q_positions, k_positions: jnp.zeros((num_heads, 1, 1))

    with pytest.raises(ValueError, match="needs head_dim, which the bias_fn hook does not"):
        PerFeature().init(jax.random.key(0), "bias_fn", num_heads=2, causal=True)


# --- training -------------------------------------------------------------------------------


def previous_token_batch(seed: int = 0):
    """Predict the token before: needs relative position."""
    tokens = np.random.default_rng(seed).integers(1, VOCAB, size=(4, 8))
    targets = np.concatenate([np.zeros((4, 1), np.int64), tokens[:, :-1]], axis=1)
    return jnp.asarray(tokens, jnp.int32), jnp.asarray(targets, jnp.int32)


def loss_of(model, tokens, targets):
    logits = model(tokens)
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


def update(model, optimizer, tokens, targets):
    loss, grads = nnx.value_and_grad(loss_of)(model, tokens, targets)
    optimizer.update(model, grads)
    return loss


train_step = nnx.jit(update)


def test_nnx_model_trains_and_resumes_from_an_orbax_checkpoint(tmp_path):
    cfg = config("alibi", d_model=16, mlp_dim=32)
    tokens, targets = previous_token_batch()
    model = pj.nnx.Transformer(cfg, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    losses = [float(train_step(model, optimizer, tokens, targets)) for _ in range(2)]

    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "state", nnx.state((model, optimizer)))
    checkpointer.wait_until_finished()
    losses += [float(train_step(model, optimizer, tokens, targets)) for _ in range(4)]

    # A fresh model and optimizer, their state read back from the checkpoint.
    def fresh():
        other = pj.nnx.Transformer(cfg, rngs=nnx.Rngs(1))
        return other, nnx.Optimizer(other, optax.adam(3e-2), wrt=nnx.Param)

    abstract = nnx.state(nnx.eval_shape(fresh))
    other, other_optimizer = fresh()
    nnx.update((other, other_optimizer), checkpointer.restore(tmp_path / "state", abstract))
    checkpointer.close()
    for _ in range(4):
        train_step(other, other_optimizer, tokens, targets)

    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    # Resuming gives exactly the run that never stopped.
    assert_trees_equal(nnx.state(other, nnx.Param), nnx.state(model, nnx.Param))


def test_nnx_vmap_trains_several_seeds_at_once():
    cfg = config("rope", d_model=16, mlp_dim=32)
    tokens, targets = previous_token_batch(1)
    seeds = 2

    @nnx.split_rngs(splits=seeds)
    @nnx.vmap(in_axes=0, out_axes=0)
    def create(rngs):
        model = pj.nnx.Transformer(cfg, rngs=rngs)
        return model, nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)

    models, optimizers = create(nnx.Rngs(0))

    step = nnx.jit(nnx.vmap(update, in_axes=(0, 0, None, None)))

    losses = np.stack([np.asarray(step(models, optimizers, tokens, targets)) for _ in range(6)])
    assert losses.shape == (6, seeds)
    assert losses[0, 0] != losses[0, 1]  # two initializations
    assert np.all(losses[-1] < 0.8 * losses[0]), losses
