"""The prefix backend: causal self-attention by query blocks over their key prefixes gives
the dense backend's values and gradients, whether or not the positions follow the indices
(when they do not, it runs the dense backend on the whole map)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention.stick_breaking import StickBreaking

B, L, H, K = 2, 40, 2, 8
TOL = {"rtol": 2e-5, "atol": 2e-6}


def _qkv(seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    return tuple(jax.random.normal(key, (B, L, H, K)) for key in keys)


def _positions(kind: str) -> np.ndarray:
    rng = np.random.default_rng(1)
    if kind == "arange":
        return np.broadcast_to(np.arange(L), (B, L))
    if kind == "sorted_random":  # randomized positions: sorted, distinct, with gaps
        return np.stack([np.sort(rng.choice(400, L, replace=False)) for _ in range(B)])
    if kind == "packed":  # two sequences in one row: positions restart, not increasing
        return np.broadcast_to(np.concatenate([np.arange(25), np.arange(15)]), (B, L))
    return np.broadcast_to(np.arange(L) // 2, (B, L))  # "ties"


def _attend(implementation, q, k, v, positions, **kwargs):
    return pj.attention.dot_product_attention(
        q,
        k,
        v,
        causal=True,
        q_positions=positions,
        k_positions=positions,
        implementation=implementation,
        **kwargs,
    )


def _value_and_grads(implementation, positions, **kwargs):
    q, k, v = _qkv()
    d_out = jax.random.normal(jax.random.key(9), (B, L, H, K))

    def run(q, k, v):
        return _attend(implementation, q, k, v, positions, **kwargs)

    out, vjp = jax.vjp(jax.jit(run), q, k, v)
    return out, vjp(d_out)


SLOPES = pj.functional.alibi_slopes(H)
OPTIONS = {
    "plain": {},
    "alibi": {"bias_fn": lambda qp, kp: pj.functional.alibi_bias(SLOPES, qp, kp)},
    "padding": {"padding_mask": jnp.arange(L)[None, :] < jnp.array([[L], [23]])},
    "window": {"window": 12},
    "sink": {"sink_logits": jnp.array([0.5, -1.0])},
    "stick_breaking": {"stick_breaking": StickBreaking()},
    "separable": {
        "separable_bias": (
            jnp.linspace(0.0, 1.0, B * H * L).reshape(B, H, L),
            jnp.linspace(-1.0, 2.0, B * H * L).reshape(B, H, L),
        )
    },
}


# Every option where the positions follow the indices (the blocks run), and each kind of
# positions with a bias and padding (the blocks, or the dense fallback).
CASES = [("arange", option) for option in OPTIONS] + [
    (kind, "alibi_padding") for kind in ("sorted_random", "packed", "ties")
]
OPTIONS["alibi_padding"] = {**OPTIONS["alibi"], **OPTIONS["padding"]}


@pytest.mark.parametrize(("kind", "option"), CASES)
def test_prefix_equals_dense(kind, option):
    positions = jnp.asarray(_positions(kind))
    # Blocks of 16 over 40 queries: two whole blocks and a shorter last one.
    out, grads = _value_and_grads("prefix", positions, block_size=16, **OPTIONS[option])
    want, want_grads = _value_and_grads("dense", positions, **OPTIONS[option])
    np.testing.assert_allclose(out, want, **TOL)
    for got, expected in zip(grads, want_grads, strict=True):
        np.testing.assert_allclose(got, expected, **TOL)


def test_the_blocks_leave_out_the_keys_above_the_diagonal():
    """With positions that follow the indices, the program's logits products are the
    blocks' ``[l, (n + 1) l]``; a dense program's is one ``[L, L]``."""
    q, k, v = _qkv()
    positions = jnp.asarray(_positions("arange"))
    text = (
        jax.jit(lambda q, k, v: _attend("prefix", q, k, v, positions, block_size=10))
        .lower(q, k, v)
        .as_text()
    )
    for n in range(4):
        assert f"tensor<{B}x{H}x10x{10 * (n + 1)}xf32>" in text, n


def test_per_seed_positions_under_vmap():
    """Seeds with their own positions (one follows the indices, one does not): each seed's
    result is the dense backend's."""
    q, k, v = _qkv()
    positions = jnp.stack([jnp.asarray(_positions("arange")), jnp.asarray(_positions("ties"))])

    def run(implementation, **kwargs):
        return jax.vmap(lambda p: _attend(implementation, q, k, v, p, **kwargs))(positions)

    np.testing.assert_allclose(run("prefix", block_size=16), run("dense"), **TOL)


def test_a_decoder_routes_to_prefix_and_matches_dense():
    """``auto`` sends a causal decoder of 128 tokens to the prefix backend; its
    logits and gradients are the dense model's."""
    from posenc_jax.attention import router

    length = 128  # the shortest the router sends there: 4 blocks of 32
    assert router.choose_implementation(
        "auto", block_size=None, q_len=length, k_len=length, has_contextual=False, batch=B,
        num_heads=H, causal=True,
    ) == ("prefix", 32)  # fmt: skip
    tokens = jax.random.randint(jax.random.key(3), (B, length), 0, 11)
    models = {
        impl: pj.models.Transformer(
            pj.models.TransformerConfig(
                vocab_size=11,
                d_model=16,
                num_layers=1,
                num_heads=H,
                encoding=pj.encodings.get("rope"),
                attention_implementation=impl,
            )
        )
        for impl in ("auto", "dense")
    }
    params = models["dense"].init(jax.random.key(0), tokens)

    def loss(impl, params):
        return jnp.mean(models[impl].apply(params, tokens) ** 2)

    for got, want in zip(
        jax.value_and_grad(lambda p: loss("auto", p))(params),
        jax.value_and_grad(lambda p: loss("dense", p))(params),
        strict=True,
    ):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, **TOL), got, want)
