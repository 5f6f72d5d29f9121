"""Randomized positions: the sampling, the errors, and delegation of every hook."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj


def _randomized(base="alibi", **kwargs):
    return pj.encodings.get("randomized", base=base, **kwargs)


def test_samples_are_sorted_unique_and_inside_the_range():
    encoding = _randomized(max_position=64)
    positions = np.asarray(encoding.sample_positions(jax.random.key(0), 16, 40))
    assert positions.shape == (16, 40) and positions.dtype == np.int32
    assert np.all(np.diff(positions, axis=-1) > 0)  # sorted and without repeats
    assert positions.min() >= 0 and positions.max() < 64


def test_rows_and_keys_give_different_samples_and_a_key_is_reproducible():
    encoding = _randomized(max_position=2048)
    first = np.asarray(encoding.sample_positions(jax.random.key(0), 4, 10))
    again = np.asarray(encoding.sample_positions(jax.random.key(0), 4, 10))
    other = np.asarray(encoding.sample_positions(jax.random.key(1), 4, 10))
    np.testing.assert_array_equal(first, again)
    assert len({tuple(row) for row in first}) == 4
    assert not np.array_equal(first, other)


def test_every_position_is_equally_likely():
    # A uniform sample of L out of M includes each position with probability L / M.
    rows, length, max_position = 4000, 4, 16
    encoding = _randomized(max_position=max_position)
    positions = np.asarray(encoding.sample_positions(jax.random.key(3), rows, length))
    counts = np.bincount(positions.ravel(), minlength=max_position)
    expected = rows * length / max_position
    std = np.sqrt(rows * (length / max_position) * (1 - length / max_position))
    assert np.all(np.abs(counts - expected) < 5 * std)


def test_subsets_are_uniform_as_with_the_papers_sampler():
    """Every subset of n out of M is equally likely, as with ``sort(choice(M, n,
    replace=False))`` (Ruoss et al. 2023), here in numpy: both histograms over the 20
    subsets of 3 out of 6 within 5 standard deviations of uniform and of each other. The
    rows are padded (3 real positions in 4 slots), so padding cannot bias them."""
    import itertools

    rows, n, width, max_position = 12000, 3, 4, 6
    subsets = {s: i for i, s in enumerate(itertools.combinations(range(max_position), n))}
    lengths = jnp.full((rows,), n)
    positions = np.asarray(
        _randomized(max_position=max_position).sample_positions(
            jax.random.key(11), rows, width, lengths=lengths
        )
    )
    ours = np.bincount([subsets[tuple(row[:n])] for row in positions], minlength=len(subsets))
    rng = np.random.default_rng(11)
    papers = [tuple(np.sort(rng.choice(max_position, n, replace=False))) for _ in range(rows)]
    theirs = np.bincount([subsets[s] for s in papers], minlength=len(subsets))
    p = 1 / len(subsets)
    std = np.sqrt(rows * p * (1 - p))
    assert np.all(np.abs(ours - rows * p) < 5 * std), ours
    assert np.all(np.abs(theirs - rows * p) < 5 * std), theirs
    assert np.all(np.abs(ours - theirs) < 5 * np.sqrt(2) * std)
    # Padding slots: distinct from the real positions and from each other.
    assert all(len(set(row.tolist())) == width for row in positions)


def test_a_sequence_longer_than_max_position_is_an_error():
    encoding = _randomized(max_position=32)
    with pytest.raises(ValueError, match=r"length 33.*max_position=32"):
        encoding.sample_positions(jax.random.key(0), 2, 33)


def test_length_equal_to_max_position_uses_every_position():
    positions = _randomized(max_position=8).sample_positions(jax.random.key(0), 3, 8)
    np.testing.assert_array_equal(positions, np.tile(np.arange(8), (3, 1)))


def test_sampling_works_under_jit():
    encoding = _randomized(max_position=100)
    positions = jax.jit(lambda key: encoding.sample_positions(key, 2, 5))(jax.random.key(0))
    assert positions.shape == (2, 5) and bool(jnp.all(jnp.diff(positions, axis=-1) > 0))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(base="alibi", max_position=0), "max_position must be a positive integer"),
        (dict(base="alibi", max_position=2.5), "max_position must be a positive integer"),
        (dict(base="no_such_encoding"), "unknown encoding 'no_such_encoding'"),
        (dict(base="learned", base_kwargs={"max_len": 4}), "unknown hyperparameter"),
        (dict(base=3), "encoding or a registered name"),
    ],
)
def test_bad_construction_is_an_error(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pj.encodings.get("randomized", **kwargs)


def test_base_kwargs_with_an_encoding_instance_is_an_error():
    with pytest.raises(ValueError, match="base_kwargs are only used with a base given by name"):
        _randomized(base=pj.encodings.get("alibi"), base_kwargs={"alibi_heads": 1})


def test_a_name_and_an_instance_build_the_same_wrapper():
    by_name = _randomized(base="learned", base_kwargs={"max_length": 64})
    by_instance = _randomized(base=pj.encodings.get("learned", max_length=64))
    assert by_name.base == by_instance.base and hash(by_name) == hash(by_instance)


@pytest.mark.parametrize("name", ["alibi", "rope", "xpos", "cope", "shaw", "learned"])
def test_capabilities_are_the_wrapped_encodings(name):
    cls = pj.encodings.get_class(name)
    wrapped = _randomized(base=name)
    assert wrapped.causal_only == cls.causal_only
    assert wrapped.needs_dense == cls.needs_dense
    # On the class itself (nothing wrapped yet) they are the base class defaults.
    assert pj.encodings.get_class("randomized").causal_only is False


class _Hooks(nn.Module):
    """Calls all three position hooks of an encoding, as models and attention do."""

    encoding: pj.encodings.PositionalEncoding

    @nn.compact
    def __call__(self, x, q, k, positions):
        encoding = self.encoding.clone(parent=self, name="bound")
        embedded = encoding.embed(x, positions)
        q, k = encoding.rotate(q, k, positions, positions)
        bias_fn = encoding.bias_fn(num_heads=q.shape[2], causal=True)
        bias = None if bias_fn is None else bias_fn(positions, positions)
        return embedded, q, k, bias


@pytest.mark.parametrize(
    "name,kwargs",
    [("alibi", {}), ("fire", {}), ("rope", {}), ("learned", {"max_length": 512})],
)
def test_every_hook_is_the_wrapped_encodings(name, kwargs, rng):
    """Same parameters in, same outputs out: the wrapper changes nothing but positions."""
    x = jnp.asarray(rng.standard_normal((2, 5, 8)), jnp.float32)
    q = jnp.asarray(rng.standard_normal((2, 5, 2, 4)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((2, 5, 2, 4)), jnp.float32)
    wrapper = _randomized(base=name, base_kwargs=kwargs, max_position=512)
    positions = wrapper.sample_positions(jax.random.key(0), 2, 5)

    wrapped_vars = _Hooks(wrapper).init(jax.random.key(1), x, q, k, positions)
    wrapped_out = _Hooks(wrapper).apply(wrapped_vars, x, q, k, positions)
    # The wrapped encoding's parameters live under "wrapped"; hand them to the bare one.
    base_params = wrapped_vars.get("params", {}).get("bound", {}).get("wrapped")
    base_vars = {"params": {"bound": base_params}} if base_params else {}
    base_out = _Hooks(pj.encodings.get(name, **kwargs)).apply(base_vars, x, q, k, positions)
    for got, expected in zip(wrapped_out, base_out, strict=True):
        if expected is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, expected)


def test_encoder_with_randomized_positions_under_jit(rng):
    # The causal decoder runs under jit in the gradient test below.
    architecture = "encoder"
    encoding = _randomized(base="fire", max_position=256)
    config = pj.models.TransformerConfig(
        vocab_size=11,
        architecture=architecture,
        d_model=16,
        num_layers=2,
        num_heads=2,
        encoding=encoding,
    )
    model = pj.models.Transformer(config)
    tokens = jnp.asarray(rng.integers(0, 11, (3, 6)), jnp.int32)
    positions = encoding.sample_positions(jax.random.key(0), 3, 6)
    variables = model.init(jax.random.key(1), tokens, positions)
    logits = jax.jit(model.apply)(variables, tokens, positions)
    assert logits.shape == (3, 6, 11) and bool(jnp.all(jnp.isfinite(logits)))
    # Each layer keeps its own copy of the wrapped encoding's parameters.
    stack = variables["params"][architecture]
    layer_params = [
        stack[f"layer_{i}"]["self_attention"]["position_encoding"]["wrapped"] for i in (0, 1)
    ]
    assert not np.array_equal(layer_params[0]["out_kernel"], layer_params[1]["out_kernel"])
    # And the outputs do depend on which positions were sampled.
    other = encoding.sample_positions(jax.random.key(2), 3, 6)
    assert not np.allclose(logits, jax.jit(model.apply)(variables, tokens, other))


def test_causal_decoder_with_randomized_positions_has_zero_gradient_from_the_future(rng):
    encoding = _randomized(base="alibi", max_position=1024)
    config = pj.models.TransformerConfig(
        vocab_size=11, d_model=16, num_layers=1, num_heads=2, encoding=encoding
    )
    model = pj.models.Transformer(config)
    tokens = jnp.asarray(rng.integers(0, 11, (1, 8)), jnp.int32)
    positions = encoding.sample_positions(jax.random.key(0), 1, 8)
    variables = model.init(jax.random.key(1), tokens, positions)
    t = 4

    def loss_at_t(perturbations):
        logits = model.apply({**variables, "perturbations": perturbations}, tokens, positions)
        return jnp.sum(logits[0, t] ** 2)

    grads = jax.jit(jax.grad(loss_at_t))(variables["perturbations"])
    grads = grads["decoder"]["input_embeddings"]
    assert np.all(grads[0, t + 1 :] == 0.0)
    assert np.all(np.abs(grads[0, : t + 1]).sum(-1) > 0)


@pytest.mark.parametrize("name", ["shaw", "cope"])
def test_contextual_hook_is_the_wrapped_encodings(name, rng):
    """Encodings that need the full logit map work wrapped, with identical outputs."""
    from posenc_jax.attention import MultiHeadAttention

    x = jnp.asarray(rng.standard_normal((2, 6, 16)), jnp.float32)
    wrapper = _randomized(base=name, max_position=64)
    positions = wrapper.sample_positions(jax.random.key(0), 2, 6)
    wrapped = MultiHeadAttention(num_heads=2, causal=True, encoding=wrapper)
    bare = MultiHeadAttention(num_heads=2, causal=True, encoding=pj.encodings.get(name))
    variables = wrapped.init(jax.random.key(1), x, q_positions=positions)
    params = dict(variables["params"])
    encoding_params = params.pop("position_encoding")["wrapped"]
    assert encoding_params  # the wrapped encoding's contextual parameters were created
    out = wrapped.apply(variables, x, q_positions=positions)
    bare_out = bare.apply(
        {"params": {**params, "position_encoding": encoding_params}}, x, q_positions=positions
    )
    np.testing.assert_array_equal(out, bare_out)
