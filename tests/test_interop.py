"""Using the package from code it does not own.

* A user-written Flax linen model with ``MultiHeadAttention`` (RoPE, ALiBi, T5) trains, and
  its parameters and optimizer state checkpoint and restore with Orbax.
* The same attention inside a Flax NNX model through ``flax.nnx.bridge``.
* A Hugging Face LLaMA-style config builds the matching rotary encoding in one call.
* The pure functions under ``jax.jit``, ``jax.vmap`` and ``jax.grad`` without Flax.
"""

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
from posenc_jax.encodings.hf_config import hf_head_dim
from tests.reference import reference_sinusoidal

VOCAB, WIDTH, HEADS, LENGTH, BATCH = 12, 16, 2, 8, 4
ENCODINGS = ["rope", "alibi", "t5"]


def previous_token_batch(seed: int = 0):
    """Tokens, positions and targets of "predict the token before": needs relative position."""
    tokens = np.random.default_rng(seed).integers(1, VOCAB, size=(BATCH, LENGTH))
    targets = np.concatenate([np.zeros((BATCH, 1), np.int64), tokens[:, :-1]], axis=1)
    positions = np.broadcast_to(np.arange(LENGTH), (BATCH, LENGTH))
    return jnp.asarray(tokens), jnp.asarray(positions, jnp.int32), jnp.asarray(targets)


def cross_entropy(logits, targets):
    return optax.softmax_cross_entropy_with_integer_labels(logits, targets).mean()


# --- a linen model written by a user -------------------------------------------------------


class UserLM(nn.Module):
    """A one-block causal LM written outside the package, taking one of its encodings."""

    encoding: pj.encodings.PositionalEncoding

    @nn.compact
    def __call__(self, tokens, positions):
        x = nn.Embed(VOCAB, WIDTH)(tokens)
        attention = pj.attention.MultiHeadAttention(
            num_heads=HEADS, causal=True, encoding=self.encoding
        )
        x = x + attention(nn.LayerNorm()(x), q_positions=positions)
        x = x + nn.Dense(WIDTH)(nn.gelu(nn.Dense(2 * WIDTH)(nn.LayerNorm()(x))))
        return nn.Dense(VOCAB)(nn.LayerNorm()(x))


def linen_trainer(model, tx):
    @jax.jit
    def step(params, opt_state, tokens, positions, targets):
        def loss_fn(p):
            return cross_entropy(model.apply(p, tokens, positions), targets)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.mark.parametrize("name", ENCODINGS)
def test_linen_user_model_trains_and_resumes_from_an_orbax_checkpoint(name, tmp_path):
    model = UserLM(pj.encodings.get(name))
    tokens, positions, targets = previous_token_batch()
    init = jax.jit(model.init)
    params = init(jax.random.key(0), tokens, positions)
    tx = optax.adam(3e-2)
    opt_state = tx.init(params)
    step = linen_trainer(model, tx)

    losses = []
    for _ in range(2):
        params, opt_state, loss = step(params, opt_state, tokens, positions, targets)
        losses.append(float(loss))

    manager = ocp.CheckpointManager(
        tmp_path, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True)
    )
    saved = {"params": params, "opt_state": opt_state}
    manager.save(2, args=ocp.args.StandardSave(saved))
    manager.wait_until_finished()

    # Continue in memory...
    for _ in range(6):
        params, opt_state, loss = step(params, opt_state, tokens, positions, targets)
        losses.append(float(loss))

    # ...and from the checkpoint, into a freshly initialized template.
    fresh = init(jax.random.key(1), tokens, positions)
    template = {"params": fresh, "opt_state": tx.init(fresh)}
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
    restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(abstract))
    manager.close()
    assert_trees_equal(restored, saved)
    resumed_params, resumed_opt = restored["params"], restored["opt_state"]
    for _ in range(6):
        resumed_params, resumed_opt, _ = step(
            resumed_params, resumed_opt, tokens, positions, targets
        )

    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    # Resuming gives exactly the run that never stopped.
    assert_trees_equal(resumed_params, params)
    # The parameters of the encoding live under the attention layer that uses it.
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    encoding_leaves = ["/".join(str(k.key) for k in path) for path, _ in flat]
    has_params = name == "t5"  # RoPE and ALiBi have no parameters
    assert any("position_encoding" in p for p in encoding_leaves) == has_params


# --- the same attention in an NNX model ----------------------------------------------------


class UserNNXLM(nnx.Module):
    """An NNX model holding the package's linen attention through ``nnx.bridge.ToNNX``."""

    def __init__(self, encoding, *, rngs: nnx.Rngs):
        self.embed = nnx.Embed(VOCAB, WIDTH, rngs=rngs)
        self.norm = nnx.LayerNorm(WIDTH, rngs=rngs)
        self.attention = nnx.bridge.ToNNX(
            pj.attention.MultiHeadAttention(num_heads=HEADS, causal=True, encoding=encoding),
            rngs=rngs,
        )
        self.head = nnx.Linear(WIDTH, VOCAB, rngs=rngs)

    def __call__(self, tokens, positions):
        x = self.embed(tokens)
        x = x + self.attention(self.norm(x), q_positions=positions)
        return self.head(x)


def new_nnx_model(name, seed, tokens, positions):
    model = UserNNXLM(pj.encodings.get(name), rngs=nnx.Rngs(seed))
    return nnx.bridge.lazy_init(model, tokens, positions)


@nnx.jit
def nnx_step(model, optimizer, tokens, positions, targets):
    def loss_fn(m):
        return cross_entropy(m(tokens, positions), targets)

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@pytest.mark.parametrize("name", ENCODINGS)
def test_nnx_model_through_the_bridge_trains_and_checkpoints(name, tmp_path):
    tokens, positions, targets = previous_token_batch(1)
    model = new_nnx_model(name, 0, tokens, positions)

    # The bridge changes nothing in the math: the linen module with the same variables
    # gives the same outputs.
    x = model.norm(model.embed(tokens))
    linen_attention = pj.attention.MultiHeadAttention(
        num_heads=HEADS, causal=True, encoding=pj.encodings.get(name)
    )
    linen_params = nnx.to_pure_dict(nnx.state(model.attention, nnx.Param))
    np.testing.assert_allclose(
        model.attention(x, q_positions=positions),
        linen_attention.apply({"params": linen_params}, x, q_positions=positions),
        rtol=1e-6,
        atol=1e-6,
    )

    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    losses = [float(nnx_step(model, optimizer, tokens, positions, targets)) for _ in range(8)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses

    checkpointer = ocp.StandardCheckpointer()
    state = nnx.state(model, nnx.Param)
    checkpointer.save(tmp_path / "params", state)
    checkpointer.wait_until_finished()
    other = new_nnx_model(name, 1, tokens, positions)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.state(other, nnx.Param))
    nnx.update(other, checkpointer.restore(tmp_path / "params", abstract))
    checkpointer.close()
    np.testing.assert_array_equal(other(tokens, positions), model(tokens, positions))


# --- Hugging Face configs --------------------------------------------------------------------
# Configs in the shape of published config.json files; the LongRoPE factor lists are
# made-up positive values of the right length (48 pairs for head dim 96).

LLAMA_3_1 = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}
QWEN2_YARN = {
    "architectures": ["Qwen2ForCausalLM"],
    "hidden_size": 3584,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rope_scaling": {"factor": 4.0, "original_max_position_embeddings": 32768, "type": "yarn"},
}
PHI3_SHORT = [round(1.0 + 0.01 * t, 4) for t in range(48)]
PHI3_LONG = [round(1.0 + 0.8 * t, 4) for t in range(48)]
PHI3_LONGROPE = {
    "architectures": ["Phi3ForCausalLM"],
    "hidden_size": 3072,
    "num_attention_heads": 32,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "rope_scaling": {"type": "longrope", "short_factor": PHI3_SHORT, "long_factor": PHI3_LONG},
}


def default_inv_freq(dim, base):
    return base ** (-np.arange(0, dim, 2, dtype=np.float64) / dim)


def llama3_reference(dim, base, factor, low, high, original):
    """Meta's apply_scaling, pair by pair (Llama 3 Herd of Models; llama-models)."""
    out = []
    for freq in default_inv_freq(dim, base):
        wavelength = 2 * math.pi / freq
        if wavelength < original / high:
            out.append(freq)
        elif wavelength > original / low:
            out.append(freq / factor)
        else:
            smooth = (original / wavelength - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return np.array(out), 1.0


def yarn_reference(dim, base, factor, original, beta_fast=32.0, beta_slow=1.0):
    """YaRN (Peng et al. 2023, Sec. 3.2-3.4): ramp between the pairs turning 32 and 1 times."""

    def pair_turning(rotations):
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low = max(math.floor(pair_turning(beta_fast)), 0)
    high = min(math.ceil(pair_turning(beta_slow)), dim - 1)
    inv = default_inv_freq(dim, base)
    ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0.0, 1.0)
    return inv * (1 - ramp) + inv / factor * ramp, 0.1 * math.log(factor) + 1, (low, high)


def longrope_reference(dim, base, factors, original, extended):
    """LongRoPE as in Phi-3 (Ding et al. 2024): theta_t / lambda_t, scale sqrt(1 + ln s/ln L0)."""
    scale = math.sqrt(1 + math.log(extended / original) / math.log(original))
    return default_inv_freq(dim, base) / np.asarray(factors, np.float64), scale


def rotate_half_reference(x, positions, inv_freq, scale):
    """Half-layout rotation in float64 of x [B, L, H, K] at positions [B, L]."""
    x = np.asarray(x, np.float64)
    pairs = len(inv_freq)
    angle = np.asarray(positions, np.float64)[:, :, None, None] * inv_freq
    a, b = x[..., :pairs], x[..., pairs : 2 * pairs]
    rotated = np.concatenate(
        [a * np.cos(angle) - b * np.sin(angle), b * np.cos(angle) + a * np.sin(angle)], -1
    )
    return np.concatenate([rotated * scale, x[..., 2 * pairs :]], -1)


def assert_encoding_rotates_like(encoding, head_dim, positions, inv_freq, scale):
    """The encoding's rotate hook equals the float64 rotation with these frequencies."""
    positions = np.asarray([positions])
    rng = np.random.default_rng(0)
    q = rng.normal(size=(1, positions.shape[1], 2, head_dim)).astype(np.float32)
    k = rng.normal(size=(1, positions.shape[1], 2, head_dim)).astype(np.float32)
    new_q, new_k = encoding.apply({}, "rotate", q, k, positions, positions)
    for new, old in ((new_q, q), (new_k, k)):
        want = rotate_half_reference(old, positions, inv_freq, scale)
        np.testing.assert_allclose(np.asarray(new), want, rtol=0, atol=3e-5)


def functional_frequencies(config, rotary_dim):
    """What the issue asks the encoding to match: rope_inv_freq of the functional HF readers."""
    params = config.get("rope_parameters") or config.get("rope_scaling")
    scaling = pj.functional.rope_scaling_from_hf(
        params,
        max_position_embeddings=config.get("max_position_embeddings"),
        original_max_position_embeddings=config.get("original_max_position_embeddings"),
    )
    base = pj.functional.rope_theta_from_hf(params, rope_theta=config.get("rope_theta"))
    return pj.functional.rope_inv_freq(rotary_dim, base=base, scaling=scaling)


def test_llama_3_1_config_builds_llama3_rope_with_meta_frequencies():
    encoding = pj.encodings.rope_from_hf_config(LLAMA_3_1)
    assert isinstance(encoding, pj.encodings.Llama3RoPE) and encoding.base == 500000.0
    head_dim = hf_head_dim(LLAMA_3_1)
    assert head_dim == 128
    want, scale = llama3_reference(128, 500000.0, 8.0, 1.0, 4.0, 8192)
    # Golden values (REFERENCES.md section 19): pairs 29-34 are blended, with these ratios.
    ratios = default_inv_freq(128, 500000.0) / want
    np.testing.assert_allclose(ratios[:29], 1.0)
    np.testing.assert_allclose(ratios[35:], 8.0)
    np.testing.assert_allclose(
        ratios[29:35], [1.2075, 1.5534, 2.0263, 2.6945, 3.6843, 5.2573], rtol=1e-4
    )
    inv_freq, attention_scale = functional_frequencies(LLAMA_3_1, head_dim)
    np.testing.assert_allclose(inv_freq, want, rtol=1e-12)
    assert attention_scale == scale
    assert_encoding_rotates_like(encoding, head_dim, [0, 3, 1000, 100000], want, scale)


def test_qwen2_yarn_config_builds_yarn_rope():
    encoding = pj.encodings.rope_from_hf_config(QWEN2_YARN)
    assert isinstance(encoding, pj.encodings.YaRNRoPE)
    assert (encoding.factor, encoding.original_max_position_embeddings) == (4.0, 32768)
    head_dim = hf_head_dim(QWEN2_YARN)
    want, scale, ramp = yarn_reference(head_dim, 1e6, 4.0, 32768)
    assert ramp == (23, 40)  # golden value for d = 128, base 1e6, L0 = 32768
    assert scale == pytest.approx(1.138629, abs=1e-6)
    inv_freq, attention_scale = functional_frequencies(QWEN2_YARN, head_dim)
    np.testing.assert_allclose(inv_freq, want, rtol=1e-12)
    assert attention_scale == pytest.approx(scale, rel=1e-12)
    assert_encoding_rotates_like(encoding, head_dim, [0, 7, 5000, 60000], want, scale)


@pytest.mark.parametrize(
    "positions,factors", [([0, 1, 2000, 4095], PHI3_SHORT), ([0, 9, 3000, 70000], PHI3_LONG)]
)
def test_phi3_longrope_config_builds_longrope_short_and_long(positions, factors):
    encoding = pj.encodings.rope_from_hf_config(PHI3_LONGROPE)
    assert isinstance(encoding, pj.encodings.LongRoPE)
    assert encoding.original_max_position_embeddings == 4096  # the top-level key
    head_dim = hf_head_dim(PHI3_LONGROPE)
    want, scale = longrope_reference(head_dim, 10000.0, factors, 4096, 131072)
    assert scale == pytest.approx(1.190238, abs=1e-6)  # golden value
    seq_len = max(positions) + 1
    params = PHI3_LONGROPE["rope_scaling"]
    scaling = pj.functional.rope_scaling_from_hf(
        params, max_position_embeddings=131072, original_max_position_embeddings=4096
    )
    inv_freq, attention_scale = pj.functional.rope_inv_freq(
        head_dim, base=10000.0, scaling=scaling, seq_len=seq_len
    )
    np.testing.assert_allclose(inv_freq, want, rtol=1e-12)
    assert attention_scale == pytest.approx(scale, rel=1e-12)
    assert_encoding_rotates_like(encoding, head_dim, positions, want, scale)


def test_rope_parameters_with_theta_inside_and_partial_rotary():
    config = {
        "head_dim": 64,
        "hidden_size": 512,
        "num_attention_heads": 4,
        "partial_rotary_factor": 0.5,
        "max_position_embeddings": 4096,
        "rope_theta": 1234.0,  # the rope_parameters' own base takes precedence
        "rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 25000.0},
    }
    encoding = pj.encodings.rope_from_hf_config(config)
    assert isinstance(encoding, pj.encodings.LinearRoPE)
    assert (encoding.base, encoding.factor, encoding.rotary_fraction) == (25000.0, 2.0, 0.5)
    want = default_inv_freq(32, 25000.0) / 2.0
    np.testing.assert_allclose(functional_frequencies(config, 32)[0], want, rtol=1e-12)
    # 32 of the 64 features rotate; the reference passes the other 32 through.
    assert_encoding_rotates_like(encoding, 64, [0, 5, 777], want, 1.0)


def test_config_without_scaling_is_plain_rope_with_its_theta():
    config = {"hidden_size": 256, "num_attention_heads": 8, "rope_theta": 1000000.0}
    encoding = pj.encodings.rope_from_hf_config(config)
    assert type(encoding) is pj.encodings.RoPE and encoding.base == 1000000.0
    assert_encoding_rotates_like(encoding, 32, [0, 4, 99], default_inv_freq(32, 1e6), 1.0)


@pytest.mark.parametrize(
    "rope_scaling,registered,factor",
    [
        ({"rope_type": "default"}, "rope", None),
        ({"type": "linear", "factor": 4.0}, "rope_pi", 4.0),
        ({"rope_type": "ntk", "factor": 3.0}, "rope_ntk", 3.0),
        ({"type": "dynamic", "factor": 2.0}, "rope_dynamic_ntk", 2.0),
        (
            {"rope_type": "yarn", "factor": 16.0, "original_max_position_embeddings": 512},
            "rope_yarn",
            16.0,
        ),
        (
            {
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
            },
            "rope_llama3",
            32.0,
        ),
        ({"type": "su", "short_factor": [1.0] * 8, "long_factor": [2.0] * 8}, "rope_longrope", 4.0),
    ],
)
def test_every_scaling_type_maps_to_its_registered_encoding(rope_scaling, registered, factor):
    config = {
        "head_dim": 16,
        "max_position_embeddings": 2048,
        "original_max_position_embeddings": 512,
        "rope_scaling": rope_scaling,
    }
    encoding = pj.encodings.rope_from_hf_config(config)
    assert encoding.registry_name == registered
    assert getattr(encoding, "factor", None) == factor
    if registered == "rope_dynamic_ntk":
        # Hugging Face's dynamic NTK uses max_position_embeddings as the original length.
        assert encoding.original_max_position_embeddings == 2048


# Gemma 3 before Hugging Face's nested ``rope_parameters``: the scaling and rope_theta are
# the global layers'; the sliding-window layers take plain RoPE of rope_local_base_freq.
GEMMA_3_FLAT = {
    "head_dim": 32,
    "rope_theta": 1e6,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": {"rope_type": "linear", "factor": 8.0},
}
GEMMA_3_NESTED = {
    "head_dim": 32,
    "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
}


@pytest.mark.parametrize("config", [GEMMA_3_NESTED, GEMMA_3_FLAT], ids=["nested", "flat"])
def test_one_rope_dict_per_layer_type_needs_layer_type(config):
    full = pj.encodings.rope_from_hf_config(config, layer_type="full_attention")
    sliding = pj.encodings.rope_from_hf_config(config, layer_type="sliding_attention")
    assert isinstance(full, pj.encodings.LinearRoPE) and full.base == 1e6
    assert type(sliding) is pj.encodings.RoPE and sliding.base == 10000.0
    with pytest.raises(ValueError, match="full_attention, sliding_attention"):
        pj.encodings.rope_from_hf_config(config)
    with pytest.raises(ValueError, match="single RoPE dict"):
        pj.encodings.rope_from_hf_config(LLAMA_3_1, layer_type="full_attention")


@pytest.mark.parametrize(
    "config,message",
    [
        ({"rope_theta": 10000.0}, "head_dim"),
        ({"head_dim": 10, "partial_rotary_factor": 0.5}, "positive even"),
        ({"head_dim": 64, "partial_rotary_factor": 1.5}, "partial_rotary_factor"),
        ({"head_dim": 64, "rope_scaling": {"rope_type": "banana"}}, "unknown RoPE type 'banana'"),
        ({"head_dim": 64, "rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "low_freq"),
        ({**PHI3_LONGROPE, "head_dim": 64}, "one factor per pair"),
        ([("rope_theta", 1.0)], "configuration dict"),
    ],
)
def test_bad_configs_fail_when_built_with_a_clear_message(config, message):
    with pytest.raises(ValueError, match=message):
        pj.encodings.rope_from_hf_config(config)


# --- pure functions without Flax -------------------------------------------------------------

POSITION_ROWS = np.array([[0, 1, 2, 3, 4], [3, 4, 5, 6, 7], [10, 13, 17, 30, 50]])


def test_sinusoidal_under_jit_and_vmap():
    encode = jax.jit(jax.vmap(lambda p: pj.functional.sinusoidal(p, 8)))
    np.testing.assert_allclose(
        encode(POSITION_ROWS), reference_sinusoidal(POSITION_ROWS, 8), atol=1e-5
    )


def test_apply_rope_under_jit_vmap_and_grad():
    rng = np.random.default_rng(0)
    inv_freq, _ = pj.functional.rope_inv_freq(8)
    x = rng.normal(size=(3, 5, 2, 8)).astype(np.float32)  # [B, L, H, K]
    cotangent = rng.normal(size=x.shape).astype(np.float32)

    rotate_rows = jax.jit(jax.vmap(lambda xs, ps: pj.functional.apply_rope(xs, ps, inv_freq)))
    np.testing.assert_allclose(
        rotate_rows(x, POSITION_ROWS),
        rotate_half_reference(x, POSITION_ROWS, inv_freq, 1.0),
        atol=2e-5,
    )

    def projected(xs):
        return jnp.sum(pj.functional.apply_rope(xs, POSITION_ROWS, inv_freq) * cotangent)

    # A rotation's gradient is its transpose: the cotangent rotated back by -angle.
    grad = jax.jit(jax.grad(projected))(x)
    np.testing.assert_allclose(
        grad, rotate_half_reference(cotangent, POSITION_ROWS, -inv_freq, 1.0), atol=2e-5
    )


def test_alibi_bias_under_jit_vmap_and_grad():
    slopes = 2.0 ** -np.arange(1.0, 9.0)  # golden slopes of 8 heads
    np.testing.assert_allclose(pj.functional.alibi_slopes(8), slopes, rtol=1e-6)
    distance = np.abs(POSITION_ROWS[:, :, None] - POSITION_ROWS[:, None, :]).astype(np.float64)
    want = -slopes[None, :, None, None] * distance[:, None]  # [B, H, L, S]

    per_row = jax.jit(jax.vmap(lambda p: pj.functional.alibi_bias(slopes, p, p)))
    np.testing.assert_allclose(per_row(POSITION_ROWS), want, rtol=1e-6)

    weights = np.random.default_rng(1).normal(size=want.shape).astype(np.float32)
    grad = jax.jit(
        jax.grad(
            lambda m: jnp.sum(pj.functional.alibi_bias(m, POSITION_ROWS, POSITION_ROWS) * weights)
        )
    )(jnp.asarray(slopes, jnp.float32))
    # d/dm_h of sum(w * -m_h |i - j|) = -sum(w_h |i - j|)
    np.testing.assert_allclose(
        grad, -np.einsum("bhls,bls->h", weights, distance), rtol=1e-5, atol=1e-4
    )


def t5_bucket_reference(relative, *, bidirectional, num_buckets=32, max_distance=128):
    """T5's bucket function (Raffel et al. 2020, Sec. 2.1), one relative position j - i."""
    bucket = 0
    n = -relative
    if bidirectional:
        num_buckets //= 2
        bucket += num_buckets if n < 0 else 0
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return bucket + n
    large = max_exact + int(
        math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    )
    return bucket + min(large, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_t5_relative_bucket_under_jit_and_vmap(bidirectional):
    relative = np.arange(-299, 301).reshape(3, -1)
    buckets = jax.jit(
        jax.vmap(lambda r: pj.functional.t5_relative_bucket(r, bidirectional=bidirectional))
    )(relative)
    want = np.vectorize(lambda r: t5_bucket_reference(r, bidirectional=bidirectional))(relative)
    np.testing.assert_array_equal(buckets, want)
    # Golden values (REFERENCES.md section 19): where the logarithmic causal buckets start.
    if not bidirectional:
        starts = [16, 19, 21, 24, 27, 31, 35, 40, 46, 52, 59, 67, 77, 87, 99, 113]
        got = pj.functional.t5_relative_bucket(-np.asarray(starts), bidirectional=False)
        np.testing.assert_array_equal(got, np.arange(16, 32))


def test_kerple_log_bias_gradients_match_the_closed_form():
    r1, r2 = np.array([0.5, 1.5], np.float32), np.array([0.2, 0.9], np.float32)
    positions = POSITION_ROWS[2]
    distance = np.abs(positions[:, None] - positions[None, :]).astype(np.float64)
    weights = np.random.default_rng(2).normal(size=(2, 5, 5))

    def total(a, b):
        return jnp.sum(pj.functional.kerple_log_bias(a, b, positions, positions) * weights)

    grad_r1, grad_r2 = jax.jit(jax.grad(total, argnums=(0, 1)))(r1, r2)
    r1_64, r2_64 = r1.astype(np.float64)[:, None, None], r2.astype(np.float64)[:, None, None]
    # d/dr1 of -r1 log(1 + r2 d) = -log(1 + r2 d); d/dr2 = -r1 d / (1 + r2 d)
    np.testing.assert_allclose(
        grad_r1, -np.sum(weights * np.log1p(r2_64 * distance), (1, 2)), rtol=1e-5
    )
    np.testing.assert_allclose(
        grad_r2, -np.sum(weights * r1_64 * distance / (1 + r2_64 * distance), (1, 2)), rtol=1e-5
    )
