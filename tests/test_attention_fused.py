"""The route to jax.nn.dot_product_attention: the core's contract (causality by positions,
empty rows, temperature, traced scale, GQA) against a float64 reference, and when "auto"
takes it. The cuDNN kernel itself needs an NVIDIA GPU; here its XLA twin ("jax") runs the
same code path."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import fused, router
from posenc_jax.attention.core import dot_product_attention
from posenc_jax.attention.ops import positions_follow_indices
from tests.reference import reference_attention

ATOL = 2e-5


def _qkv(rng, batch=2, length=6, heads=4, kv_heads=2, dim=8):
    q = rng.standard_normal((batch, length, heads, dim)).astype(np.float32)
    k = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
    v = rng.standard_normal((batch, length, kv_heads, dim)).astype(np.float32)
    return q, k, v


def _causal_by_positions(q_positions, k_positions):
    return k_positions[:, None, None, :] <= q_positions[:, None, :, None]


# Rows of positions: the index-causal kernel may run only for the first two.
INCREASING = np.array([[0, 1, 2, 3, 4, 5], [7, 8, 9, 10, 11, 12]])
SORTED_WITH_GAPS = np.array([[0, 3, 4, 9, 20, 21], [2, 5, 6, 7, 30, 31]])
WITH_TIES = np.array([[0, 1, 1, 2, 2, 3], [0, 0, 0, 1, 2, 3]])
UNSORTED = np.array([[5, 4, 3, 2, 1, 0], [3, 0, 4, 1, 5, 2]])


@pytest.mark.parametrize(
    "positions", [INCREASING, SORTED_WITH_GAPS, WITH_TIES, UNSORTED], ids=lambda p: str(p[0])
)
def test_causal_follows_positions_not_indices(rng, positions):
    q, k, v = _qkv(rng)
    got = jax.jit(
        lambda q, k, v, p: dot_product_attention(
            q, k, v, causal=True, q_positions=p, k_positions=p, implementation="jax"
        )
    )(q, k, v, positions)
    allowed = _causal_by_positions(positions, positions)
    np.testing.assert_allclose(got, reference_attention(q, k, v, allowed=allowed), atol=ATOL)


def test_positions_follow_indices_only_when_shared_and_strictly_increasing():
    follows = lambda q, k: bool(positions_follow_indices(jnp.asarray(q), jnp.asarray(k)))  # noqa: E731
    assert follows(INCREASING, INCREASING)
    assert follows(SORTED_WITH_GAPS, SORTED_WITH_GAPS)
    assert not follows(WITH_TIES, WITH_TIES)
    assert not follows(UNSORTED, UNSORTED)
    assert not follows(INCREASING, INCREASING + 1)
    # A decoding query against its cache: lengths differ.
    assert not follows(INCREASING[:, -1:], INCREASING)


def test_decoding_query_against_a_cache(rng):
    q, k, v = _qkv(rng)
    q = q[:, 3:4]
    q_positions, k_positions = np.array([[3], [1]]), np.tile(np.arange(6), (2, 1))
    got = dot_product_attention(
        q,
        k,
        v,
        causal=True,
        q_positions=q_positions,
        k_positions=k_positions,
        implementation="jax",
    )
    allowed = _causal_by_positions(q_positions, k_positions)
    np.testing.assert_allclose(got, reference_attention(q, k, v, allowed=allowed), atol=ATOL)


def test_a_query_before_every_key_gets_zeros(rng):
    """Causal rows with nothing to attend: zeros, as on the other paths."""
    q, k, v = _qkv(rng)
    positions = np.array([[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7, 8]])
    q_positions = positions - 3  # queries 0-2 of row 0 precede every key
    got = dot_product_attention(
        q, k, v, causal=True, q_positions=q_positions, k_positions=positions, implementation="jax"
    )
    allowed = _causal_by_positions(q_positions, positions)
    assert not allowed[0, 0, :3].any()
    np.testing.assert_array_equal(got[0, :3], 0.0)
    np.testing.assert_allclose(got, reference_attention(q, k, v, allowed=allowed), atol=ATOL)


def test_bidirectional_with_temperature_and_a_traced_scale(rng):
    q, k, v = _qkv(rng)
    temperature = pj.attention.AttentionTemperature(kind="log_position", training_length=2)

    @jax.jit
    def attend(q, k, v, scale):
        return dot_product_attention(
            q, k, v, scale=scale, temperature=temperature, implementation="jax"
        )

    got = attend(q, k, v, jnp.float32(0.3))
    tau = np.asarray(temperature(jnp.tile(jnp.arange(6), (2, 1)), 6), np.float64)
    # tau multiplies each query's logit row: the same as scaling that query.
    want = reference_attention(q * tau[:, :, None, None], k, v, scale=0.3)
    np.testing.assert_allclose(got, want, atol=ATOL)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"causal": True},
        {"causal": True, "q_positions": WITH_TIES, "k_positions": WITH_TIES},
    ],
    ids=["bidirectional", "causal", "causal-ties"],
)
def test_gradients_equal_the_dense_paths(rng, kwargs):
    q, k, v = _qkv(rng)

    def loss(implementation):
        def f(q, k, v):
            out = dot_product_attention(q, k, v, implementation=implementation, **kwargs)
            return jnp.sum(jnp.sin(out))

        return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

    for got, want in zip(loss("jax"), loss("dense"), strict=True):
        np.testing.assert_allclose(got, want, atol=ATOL)


def test_vmapped_rows_take_their_own_branch(rng):
    """Under vmap the branch condition is per example (both branches run, each row keeps
    its own): one example with increasing positions, one with ties."""
    q, k, v = _qkv(rng)
    positions = np.stack([INCREASING[:1], WITH_TIES[:1]])  # [2 examples, B 1, L]

    def attend(q, k, v, p):
        return dot_product_attention(
            q, k, v, causal=True, q_positions=p, k_positions=p, implementation="jax"
        )

    got = jax.vmap(attend)(q[:, None], k[:, None], v[:, None], positions)
    for i in range(2):
        allowed = _causal_by_positions(positions[i], positions[i])
        want = reference_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], allowed=allowed)
        np.testing.assert_allclose(got[i], want, atol=ATOL)


#: A call cuDNN takes, as the core describes it to ``choose_implementation``.
CUDNN_CALL = {
    "block_size": None,
    "q_len": 1024,
    "k_len": 1024,
    "has_contextual": False,
    "batch": 4,
    "num_heads": 8,
    "dtype": jnp.bfloat16,
    "head_dim": 32,
    "cudnn": True,
}


def test_auto_routes_to_cudnn_only_for_plain_half_precision_attention_on_cuda():
    choose = router.choose_implementation
    call = CUDNN_CALL
    assert choose("auto", **call) == ("cudnn", None)
    assert choose("auto", **{**call, "dtype": jnp.float16, "head_dim": 128}) == ("cudnn", None)
    chunked = ("chunked", 128)
    for not_for_cudnn in (
        {"has_bias": True},
        {"has_mask": True},
        {"dtype": jnp.float32},
        {"head_dim": 160},
        {"head_dim": 36},
        {"q_len": 1025, "k_len": 1025},
        {"cudnn": False},
    ):
        assert choose("auto", **{**call, **not_for_cudnn}) == chunked, not_for_cudnn
    assert choose("auto", **{**call, "block_size": 64}) == ("chunked", 64)
    assert choose("auto", **{**call, "has_contextual": True}) == ("dense", None)
    assert choose("jax", **{**call, "cudnn": False}) == ("jax", None)


def _fake_gpu(version="cuda 12.4", compute_capability="9.0"):
    client = type("Client", (), {"platform_version": version})()
    attributes = {"platform": "gpu", "client": client, "device_kind": "fake GPU"}
    return type("Device", (), {**attributes, "compute_capability": compute_capability})()


def test_cudnn_is_available_on_the_device_calls_run_on(monkeypatch):
    first = {"device": _fake_gpu()}
    real_devices = jax.devices
    monkeypatch.setattr(jax, "devices", lambda b=None: real_devices(b) if b else [first["device"]])
    assert fused.cudnn_available()
    for not_for_cudnn in (_fake_gpu(version="rocm 6.0"), _fake_gpu(compute_capability="7.5")):
        first["device"] = not_for_cudnn
        assert not fused.cudnn_available()
    first["device"] = _fake_gpu()
    for cpu in (real_devices("cpu")[0], "cpu"):  # jax.default_device takes either
        with jax.default_device(cpu):
            assert not fused.cudnn_available()
            message = fused.cudnn_unsupported(jnp.bfloat16, 32, 8, 8)
            assert message.endswith(f"the default device is {real_devices('cpu')[0].device_kind}")


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        ({"cudnn": False}, "needs an NVIDIA GPU of compute capability 8.0"),
        ({"dtype": jnp.float32}, "inputs must be bfloat16 or float16, got float32"),
        ({"head_dim": 160}, "multiple of 8 up to 128, got 160"),
        ({"q_len": 1023, "k_len": 1023}, "even for training, got L=1023, S=1023"),
        ({"has_mask": True}, "this call has a mask"),
    ],
)
def test_cudnn_requests_it_cannot_run_are_clear_errors(request_, message):
    call = CUDNN_CALL
    with pytest.raises(ValueError, match=message):
        router.choose_implementation("cudnn", **{**call, **request_})


def _decoder(encoding, **config):
    return pj.models.Transformer(
        pj.models.TransformerConfig(
            architecture="decoder",
            vocab_size=32,
            d_model=32,
            num_layers=2,
            num_heads=4,
            num_kv_heads=2,
            encoding=pj.encodings.get(encoding),
            **config,
        )
    )


def test_transformer_with_rope_equals_its_dense_twin(rng):
    tokens = jnp.asarray(rng.integers(0, 32, (2, 12)), jnp.int32)
    dense = _decoder("rope", attention_implementation="dense")
    via_jax = _decoder("rope", attention_implementation="jax")
    params = jax.jit(dense.init)(jax.random.key(0), tokens)
    # Offset positions: shared and increasing, so the index-causal kernel runs.
    positions = jnp.tile(jnp.arange(12) + 5, (2, 1))
    np.testing.assert_allclose(
        jax.jit(via_jax.apply)(params, tokens, positions),
        jax.jit(dense.apply)(params, tokens, positions),
        atol=1e-4,
    )


def test_a_bias_encoding_cannot_take_the_fused_route():
    with pytest.raises(ValueError, match="position bias"):
        tokens = jnp.zeros((1, 4), jnp.int32)
        _decoder("alibi", attention_implementation="jax").init(jax.random.key(0), tokens)


@pytest.mark.parametrize("positions_per_seed", [False, True], ids=["shared", "per-seed"])
def test_the_study_step_lowers_to_cudnn_calls_for_cuda(monkeypatch, positions_per_seed):
    """Without a GPU: jax's cuDNN wrapper runs its checks and lowering for CUDA when told
    that cuDNN exists, so the bfloat16 gradient of a RoPE decoder, vmapped over 2 seeds
    as the study trains them, must become a forward and a backward cuDNN call per layer
    whose operands all carry the seeds folded into the batch (2 x 4 rows). Running them
    needs a GPU."""
    cudnn_module = pytest.importorskip("jax._src.cudnn.fused_attention_stablehlo")
    if not hasattr(cudnn_module, "check_cudnn_version"):
        pytest.skip("this jax version's cuDNN wrapper has no check_cudnn_version to stand in")
    monkeypatch.setattr(cudnn_module, "check_cudnn_version", lambda: 91000)
    monkeypatch.setattr(fused, "cudnn_available", lambda: True)
    model = _decoder("rope", dtype="bfloat16")
    tokens = jnp.zeros((4, 16), jnp.int32)
    params = jax.eval_shape(
        jax.vmap(model.init, (0, None)), jax.random.split(jax.random.key(0), 2), tokens
    )
    positions = jnp.tile(jnp.arange(16), (4, 1))
    if positions_per_seed:
        positions = jnp.stack([positions, positions + 3])

    def loss(params, positions):
        return model.apply(params, tokens, positions).sum()

    step = jax.vmap(jax.grad(loss), in_axes=(0, 0 if positions_per_seed else None))
    text = jax.jit(step).trace(params, positions).lower(lowering_platforms=("cuda",)).as_text()
    calls = re.findall(r"custom_call @(__cudnn\$fmha\w+)\((.*?)\).*?: \((.*?)\) ->", text)
    # Each of the 2 layers: one forward and one backward call.
    assert sorted(name for name, _, _ in calls) == 2 * ["__cudnn$fmhaSoftmax"] + 2 * [
        "__cudnn$fmhaSoftmaxBackward"
    ]
    for name, _, operand_types in calls:
        batches = re.findall(r"tensor<(\d+)x", operand_types)
        assert batches and set(batches) == {"8"}, (name, operand_types)
