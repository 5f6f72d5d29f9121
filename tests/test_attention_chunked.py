"""Chunked attention (tiles + online softmax) against the dense path and a float64 reference.

Every bias encoding in the registry is run through both paths, values and gradients (with
respect to q, k, v and the encoding's parameters), causal and bidirectional, with lengths
that are not multiples of the block, grouped key/value heads and masks. Two bias functions
written here (an ALiBi-like distance penalty and a T5-like learned table lookup) make the
file independent of which encodings exist.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.attention import router
from posenc_jax.attention.core import dot_product_attention
from tests.reference import reference_attention

BATCH, Q_LEN, HEADS, KV_HEADS, DIM, BLOCK = 2, 13, 4, 2, 8, 4
TOL = {"rtol": 1e-5, "atol": 1e-5}


def _qkv(rng, q_len=Q_LEN, k_len=Q_LEN, heads=HEADS, kv_heads=KV_HEADS):
    q = rng.standard_normal((BATCH, q_len, heads, DIM)).astype(np.float32)
    k = rng.standard_normal((BATCH, k_len, kv_heads, DIM)).astype(np.float32)
    v = rng.standard_normal((BATCH, k_len, kv_heads, DIM)).astype(np.float32)
    return q, k, v


def _distance_penalty(slopes):
    """ALiBi-like ``-m_h |i - j|`` with the slopes as a (differentiable) parameter."""

    def bias_fn(q_positions, k_positions):
        distance = jnp.abs(q_positions[:, None, :, None] - k_positions[:, None, None, :])
        return -slopes[None, :, None, None] * distance.astype(jnp.float32)

    return bias_fn


def _table_lookup(table, max_distance):
    """T5-like learned ``table[h, clip(j - i) + R]`` read per pair."""

    def bias_fn(q_positions, k_positions):
        relative = k_positions[:, None, :] - q_positions[:, :, None]
        index = jnp.clip(relative, -max_distance, max_distance) + max_distance  # [B, L, S]
        return jnp.moveaxis(table[:, index], 0, 1)  # [B, H, L, S]

    return bias_fn


def _test_biases(rng):
    slopes = jnp.asarray(2.0 ** -np.arange(1, HEADS + 1), jnp.float32)
    table = jnp.asarray(rng.standard_normal((HEADS, 11)), jnp.float32)
    return {
        "distance_penalty": (_distance_penalty, slopes),
        "table_lookup": (functools.partial(_table_lookup, max_distance=5), table),
    }


def _registered_bias_encodings(causal):
    """``{label: (make_bias_fn(params), params)}`` of every registered encoding with a bias.

    Chosen by capability (the ``bias_fn`` hook returns a function), not by name; the
    randomized wrapper is tried around FIRE.
    """
    candidates = [(name, {}) for name in pj.encodings.names()]
    if {"randomized", "fire"} <= set(pj.encodings.names()):
        candidates.append(("randomized", {"base": "fire"}))
    found = {}
    for name, kwargs in candidates:
        encoding = pj.encodings.get(name, **kwargs)
        if encoding.needs_dense or (encoding.causal_only and not causal):
            continue
        hook = lambda m: m.bias_fn(num_heads=HEADS, causal=causal)
        captured = []
        params = encoding.init(
            jax.random.key(len(found)),
            method=lambda m, hook=hook, captured=captured: captured.append(hook(m)),
        )
        if captured[0] is not None:
            make = lambda p, encoding=encoding, hook=hook: encoding.apply(p, method=hook)
            found[f"{name}{kwargs or ''}"] = (make, params)
    return found


def _stacked_bias(families):
    """One bias over ``len(families) * HEADS`` heads: each family owns HEADS of them.

    Heads do not interact in attention, so one call checks every family at once (one
    compilation instead of one per encoding) and each family's heads, outputs and
    parameter gradients can still be compared on their own.
    """
    makers = [make for make, _ in families.values()]

    def make_bias(params):
        bias_fns = [make(p) for make, p in zip(makers, params, strict=True)]

        def bias_fn(q_positions, k_positions):
            shape = (q_positions.shape[0], HEADS, q_positions.shape[1], k_positions.shape[1])
            parts = []
            for fn in bias_fns:
                bias = fn(q_positions, k_positions)
                parts.append(jnp.broadcast_to(bias if bias.ndim == 4 else bias[None], shape))
            return jnp.concatenate(parts, axis=1)

        return bias_fn

    return make_bias, tuple(params for _, params in families.values())


def _attend(q, k, v, make_bias, params, *, path, **kwargs):
    if path == "dense":
        return dot_product_attention(
            q, k, v, bias_fn=make_bias(params), implementation="dense", **kwargs
        )
    return dot_product_attention(q, k, v, bias_fn=make_bias(params), block_size=BLOCK, **kwargs)


def _both_paths(q, k, v, make_bias, params, cotangent, **kwargs):
    """Outputs and gradients of ``<out, cotangent>`` w.r.t. (q, k, v, params), per path."""
    results = {}
    for path in ("dense", "chunked"):

        def loss(q, k, v, params, path=path):
            out = _attend(q, k, v, make_bias, params, path=path, **kwargs)
            return jnp.sum(out * cotangent), out

        grads, out = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3), has_aux=True))(q, k, v, params)
        results[path] = (out, grads)
    return results["dense"], results["chunked"]


def _assert_trees_close(dense, chunked, label):
    """Equal to 1e-5 relative to each array's largest entry.

    Parameter gradients sum a term per (query, key) pair; in float32 their rounding grows
    with the size of those terms, not with the (possibly much smaller) sum.
    """
    for dense_leaf, chunked_leaf in zip(
        jax.tree.leaves(dense), jax.tree.leaves(chunked), strict=True
    ):
        assert np.all(np.isfinite(chunked_leaf)), label
        scale = max(1.0, float(np.max(np.abs(dense_leaf))))
        np.testing.assert_allclose(
            chunked_leaf, dense_leaf, rtol=TOL["rtol"], atol=TOL["atol"] * scale, err_msg=label
        )


def _assert_paths_agree(q, k, v, make_bias, params, cotangent, **kwargs):
    """Chunked == dense in values and in gradients w.r.t. q, k, v and bias parameters."""
    dense, chunked = _both_paths(q, k, v, make_bias, params, cotangent, **kwargs)
    _assert_trees_close(dense, chunked, "outputs and gradients")
    return chunked[0]


def _random_mask(rng, q_len, k_len):
    mask = rng.random((BATCH, 1, q_len, k_len)) > 0.25
    mask[:, :, :, 0] = True  # keep causal rows non-empty; empty rows are tested below
    return mask


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
def test_every_bias_agrees_with_dense(rng, causal):
    """Both test biases and every registered bias encoding: values and all gradients.

    Random sorted positions from [0, 64) (positions are data), 13 tokens in blocks of 4,
    two query heads per key/value head, and a random mask.
    """
    families = {**_test_biases(rng), **_registered_bias_encodings(causal)}
    make_bias, params = _stacked_bias(families)
    heads = HEADS * len(families)
    q, k, v = _qkv(rng, heads=heads, kv_heads=heads // 2)
    cotangent = rng.standard_normal(q.shape).astype(np.float32)
    positions = np.sort(rng.choice(64, size=(BATCH, Q_LEN), replace=False), axis=-1)
    dense, chunked = _both_paths(
        q,
        k,
        v,
        make_bias,
        params,
        cotangent,
        causal=causal,
        mask=_random_mask(rng, Q_LEN, Q_LEN),
        q_positions=positions,
        k_positions=positions,
    )
    (dense_out, dense_grads), (chunked_out, chunked_grads) = dense, chunked
    for index, label in enumerate(families):
        heads_of = slice(index * HEADS, (index + 1) * HEADS)
        _assert_trees_close(
            (dense_out[:, :, heads_of], dense_grads[0][:, :, heads_of], dense_grads[3][index]),
            (
                chunked_out[:, :, heads_of],
                chunked_grads[0][:, :, heads_of],
                chunked_grads[3][index],
            ),
            label,
        )
    _assert_trees_close(dense_grads[1:3], chunked_grads[1:3], "gradients w.r.t. k and v")


def test_multi_query_cross_lengths_offsets_and_per_head_mask(rng):
    """One key/value head, L != S (neither a multiple of the block), queries at the end of
    a longer key cache (decoding offsets), and a mask that differs per head."""
    make_bias, params = _test_biases(rng)["table_lookup"]
    q, k, v = _qkv(rng, q_len=6, k_len=11, kv_heads=1)
    mask = rng.random((1, HEADS, 6, 11)) > 0.3
    mask[..., 0] = True
    cotangent = rng.standard_normal(q.shape).astype(np.float32)
    _assert_paths_agree(
        q, k, v, make_bias, params, cotangent, causal=True, mask=mask, q_positions=np.arange(5, 11)
    )


def test_fully_masked_rows_are_zero_and_gradients_finite(rng):
    make_bias, params = _test_biases(rng)["distance_penalty"]
    q, k, v = _qkv(rng)
    mask = np.ones((BATCH, 1, Q_LEN, Q_LEN), bool)
    mask[0, :, 2] = False  # one empty row
    mask[1, :, 8:] = False  # a whole query block (rows 8..11) and part of the next
    cotangent = rng.standard_normal(q.shape).astype(np.float32)
    dense, (out, grads) = _both_paths(q, k, v, make_bias, params, cotangent, mask=mask, causal=True)
    _assert_trees_close(dense, (out, grads), "outputs and gradients")
    np.testing.assert_array_equal(out[0, 2], 0.0)
    np.testing.assert_array_equal(out[1, 8:], 0.0)
    np.testing.assert_array_equal(grads[0][0, 2], 0.0)
    np.testing.assert_array_equal(grads[0][1, 8:], 0.0)


def test_traced_scale_gets_the_dense_gradient(rng):
    """A logit scale that is traced (a learned temperature, an argument of a jitted
    function) runs on the chunked path, and its gradient equals the dense path's."""
    make_bias, slopes = _test_biases(rng)["distance_penalty"]
    q, k, v = _qkv(rng)
    cotangent = rng.standard_normal(q.shape).astype(np.float32)
    results = {}
    for path in ("dense", "chunked"):

        def loss(q, k, v, slopes, scale, path=path):
            out = _attend(q, k, v, make_bias, slopes, path=path, causal=True, scale=scale)
            return jnp.sum(out * cotangent), out

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3, 4), has_aux=True))
        results[path] = grad(q, k, v, slopes, jnp.float32(0.7))
    _assert_trees_close(results["dense"], results["chunked"], "outputs and gradients")
    assert abs(float(results["dense"][0][4])) > 1e-3  # the scale matters to this loss


def test_key_padding_mask_matches_float64_reference(rng):
    """Chunked against an independent float64 softmax, not only against the dense path."""
    slopes = np.array([0.5, 0.25, 0.125, 0.0625])
    q, k, v = _qkv(rng, q_len=9, k_len=10)
    padding = np.ones((BATCH, 10), bool)
    padding[1, 7:] = False
    mask = padding[:, None, None, :]
    got = dot_product_attention(
        q,
        k,
        v,
        bias_fn=_distance_penalty(jnp.asarray(slopes, jnp.float32)),
        mask=mask,
        block_size=3,
    )
    distance = np.abs(np.arange(9)[:, None] - np.arange(10)[None, :])
    bias = -slopes[None, :, None, None] * distance[None, None]
    np.testing.assert_allclose(
        got, reference_attention(q, k, v, bias=bias, allowed=mask), atol=1e-5
    )


def test_causal_key_blocks_after_every_query_are_skipped(rng):
    """With 4 x 4 blocks of arange positions only the 10 blocks on or below the diagonal run."""
    q, k, v = _qkv(rng, q_len=16, k_len=16)
    calls = []

    def counting_bias(q_positions, k_positions):
        jax.debug.callback(lambda: calls.append(1))
        return jnp.zeros((HEADS, q_positions.shape[1], k_positions.shape[1]), jnp.float32)

    out = dot_product_attention(q, k, v, bias_fn=counting_bias, causal=True, block_size=4)
    jax.block_until_ready(out)
    assert len(calls) == 10
    np.testing.assert_allclose(
        out, dot_product_attention(q, k, v, causal=True, implementation="dense"), **TOL
    )


# (causal, window): causality alone, and with each kind of window (pairs checked directly).
_BLOCK_CONSTRAINTS = [
    (True, None),
    (True, pj.attention.Window(3)),
    (False, pj.attention.Window(3)),
    (True, pj.attention.Window(4, "chunked")),
    (False, pj.attention.Window(4, "chunked")),
]


@pytest.mark.parametrize("causal, window", _BLOCK_CONSTRAINTS)
@pytest.mark.parametrize("q_len, k_len, block", [(16, 16, 4), (13, 13, 4), (5, 13, 4)])
def test_block_kinds_match_every_pair_of_the_block(rng, q_len, k_len, block, causal, window):
    """A block is skipped when no (query, key) pair of it is allowed in any batch row and
    runs without the position mask when every real pair is allowed in every row; checked
    against the pairs themselves, with rows whose positions differ."""
    from posenc_jax.attention import chunked

    k_positions = np.stack([np.arange(k_len), np.sort(rng.choice(40, k_len, replace=False))])
    q_positions = k_positions[:, k_len - q_len :] + np.array([[0], [1]])
    q_pad, k_pad = -q_len % block, -k_len % block
    kinds = np.asarray(
        chunked._key_block_kinds(
            jnp.asarray(q_positions, jnp.int32),
            jnp.asarray(k_positions, jnp.int32),
            block,
            block,
            q_pad,
            k_pad,
            causal,
            window,
        )
    )
    for i in range(kinds.shape[0]):
        for j in range(kinds.shape[1]):
            qs = q_positions[:, i * block : (i + 1) * block, None]
            ks = k_positions[:, None, j * block : (j + 1) * block]
            allowed = ks <= qs if causal else np.ones(np.broadcast_shapes(qs.shape, ks.shape), bool)
            if window is not None and window.kind == "sliding":
                inside = (qs - ks < window.size) & (
                    ks - qs < (window.size if not causal else 10**9)
                )
                allowed = allowed & inside
            elif window is not None:
                allowed = allowed & (qs // window.size == ks // window.size)
            expected = (
                chunked._SKIP
                if not allowed.any()
                else chunked._WHOLE
                if allowed.all()
                else chunked._PARTIAL
            )
            assert kinds[i, j] == expected, (i, j, kinds)
    assert (kinds == chunked._PARTIAL).any()
    if window is None:
        assert (kinds == chunked._WHOLE).any()


def test_transformer_logits_agree_between_paths(rng):
    """A whole decoder with a learned-table bias: chunked config == dense config."""

    class TableBias(pj.encodings.PositionalEncoding):
        def _bias_fn(self, *, num_heads, causal, context=None):
            table = self.param("table", jax.nn.initializers.normal(1.0), (num_heads, 11))
            return _table_lookup(table, 5)

    tokens = jnp.asarray(rng.integers(0, 11, (BATCH, Q_LEN)), jnp.int32)
    dense_config = pj.models.TransformerConfig(
        vocab_size=11,
        d_model=16,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        encoding=TableBias(),
        attention_implementation="dense",
    )
    chunked_config = dataclasses.replace(
        dense_config, attention_implementation="chunked", attention_block_size=BLOCK
    )
    params = jax.jit(pj.models.Transformer(dense_config).init)(jax.random.key(0), tokens)
    dense = jax.jit(pj.models.Transformer(dense_config).apply)(params, tokens)
    chunked = jax.jit(pj.models.Transformer(chunked_config).apply)(params, tokens)
    np.testing.assert_allclose(chunked, dense, **TOL)


def test_auto_choice_of_implementation():
    choose = router.choose_implementation
    one_row = {"batch": 1, "num_heads": 8}
    small = {"q_len": 64, "k_len": 64, "has_contextual": False, **one_row}
    assert choose("auto", block_size=None, **small) == ("dense", None)
    assert choose("auto", block_size=16, **small) == ("chunked", 16)
    # The default tile's logits [B, H, edge, edge] take at most 2 MiB (256 at B H = 8).
    assert choose("chunked", block_size=None, **small) == ("chunked", 256)
    long = {"q_len": 4096, "k_len": 4096, "has_contextual": False, **one_row}
    assert choose("auto", block_size=None, **long) == ("chunked", 256)
    assert choose("auto", block_size=None, **{**long, "batch": 4}) == ("chunked", 128)
    assert choose("auto", block_size=None, **{**long, "batch": 64}) == ("chunked", 128)
    assert choose("dense", block_size=None, **long) == ("dense", None)
    contextual_long = {**long, "has_contextual": True}
    assert choose("auto", block_size=None, **contextual_long) == ("dense", None)
    # Causal self-attention from 128 tokens runs in the prefix backend, in 4 query blocks,
    # unless something needs the full map; shorter, or not causal, or cross, it runs dense.
    causal = {"q_len": 256, "k_len": 256, "has_contextual": False, "causal": True, **one_row}
    assert choose("auto", block_size=None, **causal) == ("prefix", 64)
    assert choose("auto", block_size=None, **{**causal, "q_len": 130, "k_len": 130}) == (
        "prefix",
        33,
    )
    assert choose("prefix", block_size=32, **causal) == ("prefix", 32)
    assert choose("auto", block_size=None, **{**causal, "q_len": 127, "k_len": 127}) == (
        "dense",
        None,
    )
    assert choose("auto", block_size=None, **{**causal, "causal": False}) == ("dense", None)
    assert choose("auto", block_size=None, **{**causal, "k_len": 300}) == ("dense", None)
    assert choose("auto", block_size=None, **{**causal, "has_processors": True}) == (
        "dense",
        None,
    )
    with pytest.raises(ValueError, match="runs causal attention"):
        choose("prefix", block_size=None, **{**causal, "causal": False})
    with pytest.raises(ValueError, match="L=256 and S=300"):
        choose("prefix", block_size=None, **{**causal, "k_len": 300})
    with pytest.raises(ValueError, match="needs_dense"):
        choose("prefix", block_size=None, **{**causal, "has_contextual": True})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"implementation": "flash"}, "valid: auto, dense, chunked"),
        ({"implementation": "dense", "block_size": 4}, "block_size=4"),
        ({"block_size": 0}, "positive integer"),
        ({"implementation": "chunked", "contextual": True}, "needs_dense"),
        ({"block_size": 4, "contextual": True}, "needs_dense"),
        ({"implementation": "jax", "bias_fn": lambda qp, kp: 0.0}, "has a position bias"),
        ({"implementation": "jax", "contextual": True}, "has a contextual term"),
        ({"implementation": "jax", "mask": np.ones((1, 1, 1, 1), bool)}, "has a mask"),
        ({"implementation": "cudnn"}, "needs an NVIDIA GPU"),
        ({"implementation": "jax", "block_size": 4}, "block_size=4"),
    ],
)
def test_bad_requests_are_clear_errors(rng, kwargs, message):
    q, k, v = _qkv(rng)
    if kwargs.pop("contextual", False):
        kwargs["contextual"] = pj.encodings.Contextual(logits=lambda logits, *args: logits)
    with pytest.raises(ValueError, match=message):
        dot_product_attention(q, k, v, **kwargs)
