"""Attention fuzzed against the float64 reference: every backend, every registered encoding.

Hypothesis draws the call: batch B, lengths L and S (self-attention, or queries and keys of
their own, e.g. the last keys of a cache), heads H, key/value heads G dividing H, head
dim K, float32 or bfloat16, causal or not, a window (none, sliding, chunked local) and a
tile edge, a temperature, every registered encoding with its hooks (rotate, bias_fn,
contextual, with its parameters drawn), whether there is a mask, a padding mask and a
separable bias; then, per call, positions (arange, offset by up to 10^6, randomized and
increasing, left-padded with repeated positions), padding (left or right, rows of any
real length, empty ones included), masks (random, with fully masked rows) and values.

Each backend that takes the call (dense; chunked unless the encoding needs the full map;
``jax.nn.dot_product_attention`` where the router lets it) must give the values and the
gradients (queries, keys, values, the bias's parameters, the separable bias) of the
float64 reference of ``tests/reference.py``, to a tolerance set by the dtype. The
reference takes the encoding's rotated queries and keys and its bias on the whole
position grid (they are checked against the papers' formulas in the encodings' own
tests) and builds everything attention adds from definitions: causality, windows and
padding from positions, the keys each query counts for the temperature, the softmax and
its derivative written out. Contextual encodings (Shaw, Transformer-XL, CoPE) are checked
against their papers' formulas (values; their gradients in tests/test_encodings_contextual).

A drawn setup is compiled once and runs its :data:`CALLS` calls in one program
(``lax.map``), so the cases cost execution, not compilation. The number of setups comes
from the Hypothesis profile (tests/conftest.py): ``ci`` (the default, derandomized) or
``--hypothesis-profile=long`` for a longer local search.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import posenc_jax as pj
from posenc_jax.attention import AttentionTemperature, Window, dot_product_attention
from posenc_jax.attention.router import choose_implementation
from posenc_jax.encodings.context import HookContext
from tests.reference import (
    reference_attention_vjp,
    reference_cope_logits,
    reference_shaw_logits,
    reference_shaw_values,
    reference_sinusoidal,
    reference_transformer_xl_scores,
    reference_weights,
    repeat_kv_heads,
    sum_kv_heads,
)
from tests.test_windows import _window_mask

#: Calls drawn per setup (one compiled program each).
CALLS = 24

#: Hyperparameters that make each encoding's terms matter at lengths up to 9: a scaling
#: active below the longest positions, a clip distance that clips, small tables.
ENCODING_KWARGS = {
    "cope": {"num_positions": 4},
    "fire": {"mlp_width": 8},
    "randomized": {"base": "rope"},
    "rope_dynamic_ntk": {"factor": 2.0, "original_max_position_embeddings": 3},
    "rope_longrope": {"original_max_position_embeddings": 8},
    "rope_yarn": {"original_max_position_embeddings": 4},
    "sandwich": {"dim": 8},
    "shaw": {"max_distance": 3},
    "t5": {"num_buckets": 8, "max_distance": 16},
}

#: The encodings with a contextual term, checked against their papers' logits.
CONTEXTUAL = ("shaw", "transformer_xl", "cope")

#: Largest offset drawn for an encoding: xPos's key factors leave float32 past 33,852.
MAX_OFFSET = {"xpos": 30_000}

TEMPERATURES = (
    None,
    AttentionTemperature("log_length"),
    AttentionTemperature("log_length", training_length=4),
    AttentionTemperature("log_position", training_length=4),
    AttentionTemperature("log_floor", floor_scale=4, scale=0.5),
)

#: (values, gradients) tolerance, relative to the reference's largest magnitude plus 1.
TOLERANCE = {"float32": (5e-5, 2e-4), "bfloat16": (2e-2, 5e-2)}


def logit_rounding(implementation: str, dtype: str) -> float:
    """Added to the tolerance per unit of the largest logit. Logits are float32 in every
    backend, whose rounding (2^-24 relative) moves a logit of size z by about z 2^-24 and
    each softmax weight by that fraction (a few roundings: 16 of them). The fused backend
    first folds the scale and the temperature into the queries in their own dtype (its
    kernels take a static scale only), a rounding of 2^-8 in bfloat16."""
    if implementation == "jax":
        return 2.0 ** -(jnp.finfo(dtype).nmant + 1) * 2
    return 16 * 2.0**-24


@dataclasses.dataclass(frozen=True)
class Setup:
    """What one compiled program fixes: shapes, dtype and the structure of the call."""

    encoding: str
    causal: bool
    batch: int
    q_len: int
    k_len: int
    self_attention: bool
    heads: int
    kv_heads: int
    head_dim: int
    dtype: str
    block_size: int
    window: Window | None
    temperature: AttentionTemperature | None
    mask: str  # "none", "shared" ([B, 1, L, S]) or "per_head" ([B, H, L, S])
    padding: bool
    separable: bool

    def module(self) -> pj.encodings.PositionalEncoding:
        return pj.encodings.get(self.encoding, **ENCODING_KWARGS.get(self.encoding, {}))


@st.composite
def setups(draw, encoding: str) -> Setup:
    heads = draw(st.sampled_from([1, 2, 4]))
    self_attention = draw(st.booleans())
    q_len = draw(st.integers(1, 9))
    k_len = q_len if self_attention else draw(st.integers(1, 9))
    # Half the setups add nothing to the logits, so the fused backend gets its share.
    plain = draw(st.booleans())
    window = draw(
        st.one_of(
            st.none(),
            st.builds(Window, st.integers(1, 6), st.sampled_from(["sliding", "chunked"])),
        )
    )
    return Setup(
        encoding=encoding,
        causal=pj.encodings.get_class(encoding).causal_only or draw(st.booleans()),
        batch=draw(st.integers(1, 2)),
        q_len=q_len,
        k_len=k_len,
        self_attention=self_attention,
        heads=heads,
        kv_heads=draw(st.sampled_from([g for g in (1, 2, 4) if heads % g == 0])),
        head_dim=draw(st.sampled_from([4, 8])),
        dtype=draw(st.sampled_from(["float32", "bfloat16"])),
        block_size=draw(st.integers(1, max(q_len, k_len) + 1)),
        window=window,
        temperature=draw(st.sampled_from(TEMPERATURES)),
        mask="none" if plain else draw(st.sampled_from(["none", "shared", "per_head"])),
        padding=not plain and draw(st.booleans()),
        separable=not plain and draw(st.booleans()),
    )


# --- Drawing the calls of a setup ----------------------------------------------------------


def _offset(draw, setup):
    return draw(st.one_of(st.just(0), st.integers(1, MAX_OFFSET.get(setup.encoding, 10**6))))


def _positions(draw, rng, setup, length, offset):
    """``[B, length]`` positions of a drawn kind from ``offset`` on, and each row's left
    padding."""
    batch = setup.batch
    kind = draw(st.sampled_from(["arange", "randomized", "left_padded"]))
    pads = np.zeros(batch, int)
    if kind == "arange":
        rows = np.broadcast_to(np.arange(length), (batch, length))
    elif kind == "randomized":
        rows = np.stack([np.sort(rng.choice(4 * length, length, replace=False)) for _ in pads])
    else:  # left padding: the padded slots repeat the first real position
        pads = np.asarray([draw(st.integers(0, length - 1)) for _ in range(batch)])
        rows = np.stack([np.maximum(np.arange(length) - p, 0) for p in pads])
    return (rows + offset).astype(np.int32), pads


@st.composite
def calls(draw, setup: Setup) -> list[dict]:
    """:data:`CALLS` calls of ``setup``: numpy arrays, plus what the reference needs."""
    drawn = []
    for _ in range(CALLS):
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        call = {}
        # Queries and keys share one frame (a document, or a source and its target from 0):
        # a query 10^6 positions from every key would only test float32's resolution of
        # logits that large.
        offset = _offset(draw, setup)
        q_positions, pads = _positions(draw, rng, setup, setup.q_len, offset)
        if setup.self_attention:
            k_positions = q_positions
        elif setup.q_len <= setup.k_len and draw(st.booleans()):
            # Queries are the last keys, as when decoding against a cache.
            k_positions, pads = _positions(draw, rng, setup, setup.k_len, offset)
            q_positions = k_positions[:, setup.k_len - setup.q_len :]
        else:
            k_positions, pads = _positions(draw, rng, setup, setup.k_len, offset)
        call["q_positions"], call["k_positions"] = q_positions, k_positions
        if setup.padding:
            real = [draw(st.integers(0, setup.k_len)) for _ in range(setup.batch)]
            slots = np.arange(setup.k_len)[None, :]
            left = slots >= pads[:, None]
            call["padding"] = left & (slots < (pads + np.asarray(real))[:, None])
        if setup.mask != "none":
            heads = setup.heads if setup.mask == "per_head" else 1
            shape = (setup.batch, heads, setup.q_len, setup.k_len)
            mask = rng.random(shape) < draw(st.sampled_from([0.3, 0.7, 1.0]))
            mask[:, :, rng.random(setup.q_len) < draw(st.sampled_from([0.0, 0.3]))] = False
            call["mask"] = mask
        sharpness = draw(st.sampled_from([0.5, 1.0, 3.0]))
        for name, length, heads, spread in (
            ("q", setup.q_len, setup.heads, sharpness),
            ("k", setup.k_len, setup.kv_heads, sharpness),
            ("v", setup.k_len, setup.kv_heads, 1.0),
            ("d_out", setup.q_len, setup.heads, 1.0),
        ):
            shape = (setup.batch, length, heads, setup.head_dim)
            # Values the setup's dtype holds exactly: the reference reads what attention reads.
            values = jnp.asarray(spread * rng.standard_normal(shape), setup.dtype)
            call[name] = np.asarray(values, np.float32)
        if setup.separable:
            for name, length in (("u", setup.q_len), ("w", setup.k_len)):
                shape = (setup.batch, setup.heads, length)
                call[name] = rng.standard_normal(shape).astype(np.float32)
        drawn.append(call)
    return drawn


# --- The programs under test ---------------------------------------------------------------


def _context(setup, call) -> HookContext:
    padding = call.get("padding")
    return HookContext(
        q_positions=call["q_positions"],
        k_positions=call["k_positions"],
        q_valid=padding if setup.self_attention else None,
        k_valid=padding,
    )


def _rotated(module, q, k, context):
    return module.rotate(q, k, context.q_positions, context.k_positions, context=context)


def _terms(module, setup, context):
    bias_fn = module.bias_fn(num_heads=setup.heads, causal=setup.causal, context=context)
    contextual = module.contextual(
        num_heads=setup.heads, head_dim=setup.head_dim, causal=setup.causal, context=context
    )
    return bias_fn, contextual


def _every_hook(module, setup, q, k, context):
    return _rotated(module, q, k, context), _terms(module, setup, context)


def _stacked(setup, drawn):
    """The calls as arrays with a leading call axis, inputs in the setup's dtype."""
    stacked = {key: jnp.asarray(np.stack([c[key] for c in drawn])) for key in drawn[0]}
    for key in ("q", "k", "v", "d_out"):
        stacked[key] = stacked[key].astype(setup.dtype)
    return stacked


@functools.cache
def _program(setup: Setup, backends: tuple[str, ...], bias_parameters: bool):
    """One compiled program per setup, run on every call (``lax.map``). Per call: the
    rotated queries and keys, the bias on the whole position grid and, with
    ``bias_parameters``, its Jacobian with respect to the encoding's parameters; per
    backend, the output and the gradients of ``sum(d_out * out)`` with respect to the
    rotated queries and keys, the values, the encoding's parameters and the separable
    bias."""
    module = setup.module()

    def one(params, call):
        context = _context(setup, call)
        q, k = module.apply({"params": params}, call["q"], call["k"], context, method=_rotated)
        found = {"q": q, "k": k}

        def terms(params):
            return module.apply({"params": params}, setup, context, method=_terms)

        def bias_grid(params):
            shape = (setup.batch, setup.heads, setup.q_len, setup.k_len)
            bias = terms(params)[0](context.q_positions, context.k_positions)
            return jnp.broadcast_to(bias, shape).astype(jnp.float32)

        if terms(params)[0] is not None:
            found["bias"] = bias_grid(params)
            if bias_parameters:
                found["bias_jacobian"] = jax.jacrev(bias_grid)(params)

        def attend(implementation, q, k, v, params, separable):
            bias_fn, contextual = terms(params)
            return dot_product_attention(
                q,
                k,
                v,
                bias_fn=bias_fn,
                mask=call.get("mask"),
                causal=setup.causal,
                q_positions=context.q_positions,
                k_positions=context.k_positions,
                block_size=setup.block_size if implementation in ("chunked", "prefix") else None,
                contextual=contextual,
                temperature=setup.temperature,
                implementation=implementation,
                padding_mask=call.get("padding"),
                window=setup.window,
                separable_bias=separable,
            )

        separable = (call["u"], call["w"]) if setup.separable else None
        for implementation in backends:
            run = functools.partial(attend, implementation)
            out, vjp = jax.vjp(run, q, k, call["v"], params, separable)
            found[implementation] = (out, vjp(call["d_out"]))
        return found

    return jax.jit(lambda params, calls: jax.lax.map(functools.partial(one, params), calls))


def _backends(setup: Setup, has_contextual: bool, has_bias: bool) -> list[str]:
    backends = ["dense"]
    if not has_contextual:
        backends.append("chunked")
        if setup.causal and setup.q_len == setup.k_len:
            backends.append("prefix")
    try:
        choose_implementation(
            "jax",
            block_size=None,
            q_len=setup.q_len,
            k_len=setup.k_len,
            has_contextual=has_contextual,
            batch=setup.batch,
            num_heads=setup.heads,
            has_bias=has_bias or setup.separable,
            has_mask=setup.mask != "none" or setup.padding,
            window=setup.window,
            dtype=jnp.dtype(setup.dtype),
            head_dim=setup.module().rotated_width(setup.head_dim),
            value_dim=setup.head_dim,
        )
        backends.append("jax")
    except ValueError:
        pass
    return backends


def _parameters(setup: Setup, call: dict, rng, spread: float):
    """The encoding's parameters, drawn from N(0, spread^2) (their shapes from its
    initialization) so that every term matters: Shaw's tables start at 0.02 and CoPE's
    embeddings at 0. Every value is valid: FIRE reads |c| and |L|, KERPLE clamps."""
    first = {key: value[0] for key, value in call.items()}
    shapes = jax.eval_shape(
        lambda q, k, context: setup.module().init(
            jax.random.key(0), setup, q, k, context, method=_every_hook
        ),
        first["q"],
        first["k"],
        _context(setup, first),
    ).get("params", {})
    return jax.tree.map(
        lambda leaf: jnp.asarray(spread * rng.standard_normal(leaf.shape), leaf.dtype), shapes
    )


# --- The reference -------------------------------------------------------------------------


def _allowed(setup, call):
    """Causality, the window and padding by their definitions, [B, 1, L, S]."""
    q_positions, k_positions = call["q_positions"], call["k_positions"]
    allowed = np.ones((setup.batch, 1, setup.q_len, setup.k_len), bool)
    if setup.causal:
        allowed &= k_positions[:, None, None, :] <= q_positions[:, None, :, None]
    if setup.window is not None:
        allowed &= _window_mask(q_positions, k_positions, setup.window, setup.causal)
    if setup.padding:
        allowed &= call["padding"][:, None, None, :]
    return allowed


def _temperature_factor(setup, call, counted):
    """tau ``[B, L]`` from its definition; ``counted`` [B, 1, L, S] are the keys a query
    may attend (causality, window, padding: not the extra mask)."""
    temperature = setup.temperature
    if temperature is None:
        return None
    p = call["q_positions"].astype(np.float64)
    if temperature.kind == "log_position":
        n = temperature.training_length
        return np.where(p + 1 > n, np.log(np.maximum(p + 1, 1)) / math.log(n), 1.0)
    if temperature.kind == "log_floor":
        steps = np.floor((p + 1) / temperature.floor_scale)
        return 1.0 + temperature.scale * np.log1p(steps)
    keys = np.maximum(counted[:, 0].sum(-1), 1).astype(np.float64)
    factor = np.log(keys)
    if temperature.training_length is not None:
        factor /= math.log(temperature.training_length)
    return factor


def _contextual_logits(setup, params, call, q, k, allowed):
    """The paper's logits of a contextual encoding (Shaw, Transformer-XL, CoPE)."""
    positions = call["q_positions"], call["k_positions"]
    if setup.encoding == "shaw":
        clip = ENCODING_KWARGS["shaw"]["max_distance"]
        return reference_shaw_logits(q, k, params["relative_keys"], *positions, clip)
    if setup.encoding == "transformer_xl":
        return reference_transformer_xl_scores(
            q,
            k,
            params["content_bias"],
            params["position_bias"],
            params["relative_kernel"],
            *positions,
        )
    npos = ENCODING_KWARGS["cope"]["num_positions"]
    return reference_cope_logits(q, k, params["position_embeddings"], npos, allowed)


def _reference(setup, params, call, q, k, bias):
    """Output and gradients in float64: ``{"out", "q", "k", "v", "bias", "u", "w"}``."""
    allowed = _allowed(setup, call)
    factor = _temperature_factor(setup, call, allowed)
    if "mask" in call:
        allowed = allowed & call["mask"]
    bias = np.asarray(bias, np.float64)
    if setup.separable:
        bias = bias + call["u"][..., :, None] - call["w"][..., None, :]
    q, k = np.asarray(q, np.float64), np.asarray(k, np.float64)
    scale = q.shape[-1] ** -0.5  # the rotated width (PoPE doubles it), as the core
    if setup.encoding in CONTEXTUAL:
        logits = _contextual_logits(setup, params, call, q, k, allowed)
        content = np.einsum("blhk,bshk->bhls", q, repeat_kv_heads(k, setup.heads)) * scale
        bias = bias + logits - content
    terms = {"bias": bias, "allowed": allowed, "scale": scale, "logit_factor": factor}
    v = np.asarray(call["v"], np.float64)
    weights = reference_weights(q, k, **terms)
    out = np.einsum("bhls,bshk->blhk", weights, repeat_kv_heads(v, setup.heads))
    if setup.encoding == "shaw":
        clip = ENCODING_KWARGS["shaw"]["max_distance"]
        out = out + reference_shaw_values(
            weights, params["relative_values"], call["q_positions"], call["k_positions"], clip
        )
    grads = reference_attention_vjp(q, k, v, call["d_out"], **terms)
    grads["u"], grads["w"] = grads["bias"].sum(-1), -grads["bias"].sum(-2)
    logits = np.einsum("blhk,bshk->bhls", q, repeat_kv_heads(k, setup.heads)) * scale + bias
    if factor is not None:
        logits = logits * factor[:, None, :, None]
    logit_size = np.max(np.abs(np.where(allowed, logits, 0.0)), initial=0.0)
    sizes = _gradient_terms(setup, q, k, weights, call["d_out"], grads["bias"])
    return {"out": out, "logit_size": logit_size, "sizes": sizes, **grads}


def _gradient_terms(setup, q, k, weights, d_out, d_z):
    """The size of the terms each gradient sums: ``sum |a| |b|`` for a gradient
    ``sum a b``. Softmax rows make them cancel (``sum_j dz_ij = 0``: the gradient of u is
    0), and rounding scales with these sizes, not with the result's."""
    heads, kv_heads = setup.heads, setup.kv_heads
    scale, size = q.shape[-1] ** -0.5, np.abs(d_z)
    return {
        "q": scale * np.einsum("bhls,bshk->blhk", size, np.abs(repeat_kv_heads(k, heads))),
        "k": scale * sum_kv_heads(np.einsum("bhls,blhk->bshk", size, np.abs(q)), kv_heads),
        "v": sum_kv_heads(np.einsum("bhls,blhk->bshk", weights, np.abs(d_out)), kv_heads),
        "u": size.sum(-1),
        "w": size.sum(-2),
    }


def _assert_close(got, want, tolerance, what, magnitude=0.0):
    """``|got - want| <= tolerance (1 + max(|want|, magnitude))`` everywhere, all finite;
    ``magnitude`` is the size of the terms ``want`` sums, where they cancel."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    size = max(np.max(np.abs(want), initial=0.0), np.max(magnitude, initial=0.0))
    atol = tolerance * (1.0 + size)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, reference {want.shape}"
    error = np.max(np.abs(got - want), initial=0.0)
    assert np.all(np.isfinite(got)) and error <= atol, f"{what}: error {error:.3g} > {atol:.3g}"


# --- The property --------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", pj.encodings.names())
@given(data=st.data())
def test_every_backend_equals_the_float64_reference(encoding, data):
    setup = data.draw(setups(encoding), label="setup")
    drawn = data.draw(calls(setup), label="calls")
    batched = _stacked(setup, drawn)
    spread = data.draw(st.sampled_from([0.1, 0.5, 1.0]), label="parameter spread")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="parameters"))
    params = _parameters(setup, batched, rng, spread)
    first = {key: value[0] for key, value in batched.items()}
    bias_fn, contextual = setup.module().apply(
        {"params": params}, setup, _context(setup, first), method=_terms
    )
    has_bias = bias_fn is not None
    backends = tuple(_backends(setup, contextual is not None, has_bias))
    bias_parameters = has_bias and bool(jax.tree.leaves(params))
    found = jax.tree.map(np.asarray, _program(setup, backends, bias_parameters)(params, batched))
    host = jax.tree.map(np.asarray, params)
    for i, call in enumerate(drawn):
        bias = found["bias"][i] if has_bias else np.zeros(())
        reference = _reference(setup, host, call, found["q"][i], found["k"][i], bias)
        if bias_parameters:  # d params = J^T d bias, J the bias's Jacobian
            jacobians = [jacobian[i] for jacobian in jax.tree.leaves(found["bias_jacobian"])]
            d_bias = reference["bias"]
            reference["params"] = [np.tensordot(d_bias, j, d_bias.ndim) for j in jacobians]
            # A sum over every pair whose true value cancels: rounding scales with the
            # sum of the terms' magnitudes, not with the result's.
            terms = [np.tensordot(np.abs(d_bias), np.abs(j), d_bias.ndim) for j in jacobians]
        for implementation in backends:
            out, (dq, dk, dv, d_params, d_separable) = found[implementation]
            where = f"{implementation}, call {i} of {setup}"
            rounding = logit_rounding(implementation, setup.dtype) * reference["logit_size"]
            value_tolerance, gradient_tolerance = (t + rounding for t in TOLERANCE[setup.dtype])
            _assert_close(out[i], reference["out"], value_tolerance, f"output ({where})")
            if contextual is not None:
                continue  # the gradients of the contextual terms: their own tests
            gradients = {"q": dq, "k": dk, "v": dv}
            if setup.separable:
                gradients.update(zip("uw", d_separable, strict=True))
            for name, got in gradients.items():
                _assert_close(
                    got[i],
                    reference[name],
                    gradient_tolerance,
                    f"d{name} ({where})",
                    reference["sizes"][name],
                )
            if bias_parameters:
                for got, want, magnitude in zip(
                    jax.tree.leaves(d_params), reference["params"], terms, strict=True
                ):
                    _assert_close(got[i], want, gradient_tolerance, f"dparams ({where})", magnitude)


# --- The reference's gradient --------------------------------------------------------------


def test_the_reference_gradient_is_the_derivative_of_the_reference():
    """Central differences of reference_attention in float64 (GQA, a temperature, masked
    and empty rows): the written-out derivative the property compares against is right."""
    rng = np.random.default_rng(3)
    q, d_out = rng.standard_normal((2, 2, 3, 4, 4))
    k, v = rng.standard_normal((2, 2, 5, 2, 4))
    bias = rng.standard_normal((2, 4, 3, 5))
    allowed = rng.random((2, 1, 3, 5)) < 0.7
    allowed[0, :, 1] = False
    factor = rng.uniform(0.5, 2.0, (2, 3))
    terms = {"bias": bias, "allowed": allowed, "logit_factor": factor}
    grads = reference_attention_vjp(q, k, v, d_out, **terms)
    inputs = {"q": q, "k": k, "v": v, "bias": bias}

    def loss(name, value):
        args = {**inputs, name: value}
        weights = reference_weights(
            args["q"], args["k"], bias=args["bias"], allowed=allowed, logit_factor=factor
        )
        out = np.einsum("bhls,bshk->blhk", weights, repeat_kv_heads(args["v"], 4))
        return np.sum(out * d_out)

    step = 1e-6
    for name, value in inputs.items():
        numeric = np.zeros_like(value)
        for index in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[index] += step
            minus[index] -= step
            numeric[index] = (loss(name, plus) - loss(name, minus)) / (2 * step)
        np.testing.assert_allclose(grads[name], numeric, atol=1e-7, err_msg=name)


# --- Embedding hooks -----------------------------------------------------------------------

EMBED_ENCODINGS = ("sinusoidal", "learned", "normalized", "integer")

#: Embeddings per drawn example.
EMBEDS = 32


def _reference_embedding(name, params, x, positions, valid):
    """x plus the encoding's position vector, from its definition, float64."""
    positions = positions.astype(np.float64)
    if name == "sinusoidal":
        return x + reference_sinusoidal(positions, x.shape[-1])
    if name == "learned":
        return x + np.asarray(params["table"], np.float64)[positions.astype(int)]
    feature = positions
    if name == "normalized":  # p / (n - 1), n - 1 the example's last real position
        real = np.where(valid, positions, -np.inf) if valid is not None else positions
        last = np.max(real, axis=-1, keepdims=True)
        feature = positions / np.maximum(last, 1.0)
    return x + feature[..., None] * np.asarray(params["direction"], np.float64)


@functools.cache
def _embed_program(name: str, dtype: str):
    """Per call: the embed hook of ``name`` on ``x`` at ``positions`` (with its own
    parameters and padding)."""
    module = _embedding(name)

    def one(call):
        context = pj.encodings.context.for_tokens(call["positions"], call.get("valid"))
        x = call["x"].astype(dtype)
        return module.apply(
            {"params": call["params"]}, "embed", x, call["positions"], context=context
        )

    return jax.jit(lambda calls: jax.lax.map(one, calls))


def _embedding(name):
    return pj.encodings.get(name, **({"max_length": TABLE} if name == "learned" else {}))


#: Rows of the learned table.
TABLE = 64


@pytest.mark.parametrize("name", EMBED_ENCODINGS)
@given(data=st.data())
def test_embedding_hooks_equal_their_definitions(name, data):
    """The embed hook at drawn positions (up to 10^6, left- and right-padded rows)."""
    batch, length = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 9))
    width = data.draw(st.sampled_from([4, 6, 8]))
    dtype = data.draw(st.sampled_from(["float32", "bfloat16"]))
    padded = data.draw(st.booleans())
    setup = Setup(name, True, batch, length, length, True, 1, 1, width, dtype, 1, None, None,
                  "none", padded, False)  # fmt: skip
    shapes = jax.eval_shape(
        lambda x, positions: _embedding(name).init(jax.random.key(0), "embed", x, positions),
        jnp.zeros((batch, length, width)),
        jnp.zeros((batch, length), jnp.int32),
    ).get("params", {})
    calls = []
    for _ in range(EMBEDS):
        rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
        positions, pads = _positions(data.draw, rng, setup, length, _offset(data.draw, setup))
        if name == "learned":
            positions = positions % TABLE
        call = {
            "positions": positions,
            "x": rng.standard_normal((batch, length, width)).astype(np.float32),
            "params": jax.tree.map(
                lambda leaf, rng=rng: rng.standard_normal(leaf.shape).astype(np.float32), shapes
            ),
        }
        if padded:
            real = np.asarray([data.draw(st.integers(1, length)) for _ in range(batch)])
            slots = np.arange(length)[None, :]
            call["valid"] = (slots >= pads[:, None]) & (slots < (pads + real)[:, None])
        calls.append(call)
    stacked = jax.tree.map(lambda *leaves: np.stack(leaves), *calls)
    got = _embed_program(name, dtype)(stacked)
    assert got.dtype == jnp.dtype(dtype)
    for i, call in enumerate(calls):
        x = np.asarray(jnp.asarray(call["x"], dtype), np.float64)
        valid = call.get("valid")
        want = _reference_embedding(name, call["params"], x, call["positions"], valid)
        embedded = np.asarray(got[i], np.float64)
        if valid is not None:  # a padded token's vector is not defined
            embedded = np.where(valid[..., None], embedded, 0)
            want = np.where(valid[..., None], want, 0)
        tolerance = {"float32": 2e-5, "bfloat16": 1e-2}[dtype]
        _assert_close(embedded, want, tolerance, f"{name} embed, call {i}")
