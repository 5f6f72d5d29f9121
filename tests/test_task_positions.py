"""Positions chosen for the task: the addition task's digit places, Abacus, position coupling.

References are written from the papers' definitions in plain Python / NumPy (float64):
a digit's place is its 1-based index in its own number counted from the least
significant digit; Abacus adds one offset ``k in [0, k_max]`` per training batch to the
digits' places (0 elsewhere, ``k = 0`` at evaluation); position coupling gives the
non-digit tokens ``start`` and a digit ``start + place``, with one start per training
example in ``[1, max_position - largest place]`` and ``start = 1`` at evaluation.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import posenc_jax as pj
from posenc_jax.data import get_task
from posenc_jax.data.task import pad_batch
from posenc_jax.train import step
from posenc_jax.train.decode import decode_step, greedy_fill, init_cache
from posenc_jax.train.step import model_positions

TASK = get_task("addition")
forward = jax.jit(step.forward, static_argnums=0)
sample = jax.jit(TASK.sample, static_argnums=(1, 2), static_argnames="min_length")
PLUS, EQUALS, ZERO = 1, 2, 3


def _reference_places(tokens):
    """Each token's place in its own number (1-based, from the least significant digit,
    which comes first), 0 for ``+``, ``=`` and padding."""
    places, run = [], 0
    for token in tokens:
        run = run + 1 if token >= ZERO else 0
        places.append(run)
    return places


@pytest.mark.parametrize("min_length", [None, 1])
def test_addition_places_and_operand_lengths(min_length):
    batch = sample(jax.random.key(3), 64, 6, min_length=min_length)
    inputs, places = np.asarray(batch["inputs"]), np.asarray(batch["task_positions"])
    real = np.asarray(batch.get("padding_mask", np.ones(inputs.shape, bool)))
    counts = set()
    for row in range(inputs.shape[0]):
        n = int(real[row].sum())
        padding = [0] * (len(real[row]) - n)
        assert places[row].tolist() == _reference_places(inputs[row, :n]) + padding
        tokens = inputs[row, :n].tolist()
        a, b = tokens[: tokens.index(PLUS)], tokens[tokens.index(PLUS) + 1 : tokens.index(EQUALS)]
        for number in (a, b):  # a number of two or more digits has a nonzero leading digit
            assert len(number) == 1 or number[-1] != ZERO
        counts.add((len(a), len(b)))
    if min_length is None:
        assert counts == {(6, 6)}
    else:  # each operand draws its own digit count from 1..6
        assert {a for a, _ in counts} == set(range(1, 7)) and len(counts) > 12


def test_padding_a_batch_pads_its_task_positions():
    batch = sample(jax.random.key(0), 4, 3)
    padded = pad_batch(batch, 20)
    np.testing.assert_array_equal(padded["task_positions"][:, :11], batch["task_positions"])
    assert not np.asarray(padded["task_positions"][:, 11:]).any()


def _places(rng, batch=5, width=10):
    """Random rows of places: runs of digits separated by non-digit tokens (place 0)."""
    return jnp.asarray(
        [_reference_places(rng.integers(1, 6, width)) for _ in range(batch)], jnp.int32
    )


def _draws(encoding, places, count):
    """``count`` training draws of the embed positions, ``[count, B, L]``."""
    keys = jax.random.split(jax.random.key(0), count)
    return np.asarray(
        jax.vmap(lambda key: encoding.embed_positions(key, places, training=True))(keys)
    )


def test_abacus_offsets_one_per_training_batch_none_at_evaluation(rng):
    abacus = pj.encodings.get("abacus", max_offset=3)
    places = _places(rng)
    digits = np.asarray(places) > 0
    np.testing.assert_array_equal(abacus.embed_positions(None, places, training=False), places)
    ids = _draws(abacus, places, 40)
    offsets = ids - np.asarray(places)[None]
    assert not ids[:, ~digits].any()  # other tokens keep id 0
    for draw in offsets:  # one offset for the whole batch
        assert len(set(draw[digits].tolist())) == 1
    # k_max is inclusive, as in the official code's random.randint(0, max_k).
    assert set(offsets[:, digits][:, 0].tolist()) == {0, 1, 2, 3}


def test_position_coupling_starts_one_per_training_example(rng):
    coupling = pj.encodings.get("position_coupling", max_position=16)
    places = _places(rng)
    largest = np.asarray(places).max(axis=1)
    np.testing.assert_array_equal(
        coupling.embed_positions(None, places, training=False), np.asarray(places) + 1
    )
    starts = _draws(coupling, places, 400) - np.asarray(places)[None]
    assert (starts == starts[:, :, :1]).all()  # one start per example, on every token
    for row in range(len(largest)):
        assert set(starts[:, row, 0].tolist()) == set(range(1, 16 - largest[row] + 1))
    with pytest.raises(ValueError, match="max_position=4"):
        pj.encodings.get("position_coupling", max_position=4).embed_positions(
            None, places, training=False
        )


@pytest.mark.parametrize("name", ["abacus", "position_coupling"])
def test_a_batch_without_task_positions_is_named(name):
    with pytest.raises(ValueError, match="task_positions"):
        pj.encodings.get(name).embed_positions(jax.random.key(0), None, training=True)


def _model(name, **kwargs):
    config = pj.models.TransformerConfig(
        vocab_size=TASK.vocab_size,
        d_model=16,
        num_layers=2,
        num_heads=2,
        mlp_dim=32,
        encoding=pj.encodings.get(name, **kwargs),
    )
    batch = sample(jax.random.key(1), 3, 4, min_length=1)
    positions = model_positions(config, batch, jax.random.key(2))
    model = pj.models.Transformer(config)
    params = model.init(
        jax.random.key(0),
        batch["inputs"],
        positions["positions"],
        embed_positions=positions["embed_positions"],
    )["params"]
    return config, params, batch, positions


def test_the_table_is_added_at_the_embed_positions_alone(rng):
    """The embedding is x + table[id] (float64 reference); attention orders tokens by the
    model's positions, so shifting them leaves a NoPE model's logits as they are, while
    other embed positions change them."""
    abacus = pj.encodings.get("abacus", max_position=20)
    x = jnp.asarray(rng.normal(size=(2, 6, 8)), jnp.float32)
    ids = jnp.asarray(rng.integers(0, 21, (2, 6)), jnp.int32)
    params = abacus.init(jax.random.key(0), "embed", x, ids)
    table = np.asarray(params["params"]["table"], np.float64)
    np.testing.assert_allclose(
        abacus.apply(params, "embed", x, ids), np.asarray(x, np.float64) + table[ids], atol=1e-6
    )

    config, params, batch, positions = _model("abacus", max_position=20)
    logits = forward(config, params, batch, positions)
    shifted = {**positions, "positions": positions["positions"] + 7}
    np.testing.assert_allclose(forward(config, params, batch, shifted), logits, atol=1e-5)
    moved = {**positions, "embed_positions": positions["embed_positions"] + 1}
    assert np.abs(forward(config, params, batch, moved) - logits).max() > 1e-3


@pytest.mark.parametrize("name", ["abacus", "position_coupling"])
def test_decoding_with_a_cache_equals_the_full_pass(name):
    """Token by token with the embed positions (decode_step), and greedy_fill fed the
    teacher's tokens as its prompt, give the full pass's logits and argmax."""
    config, params, batch, positions = _model(name)
    full = forward(config, params, {"inputs": batch["inputs"]}, positions)
    cache = init_cache(config, 3, batch["inputs"].shape[1])
    steps = []
    for t in range(batch["inputs"].shape[1]):
        logits, cache = decode_step(
            config,
            params,
            cache,
            batch["inputs"][:, t : t + 1],
            positions["positions"][:, t : t + 1],
            embed_positions=positions["embed_positions"][:, t : t + 1],
        )
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=2e-5, rtol=2e-5)
    width = batch["inputs"].shape[1]
    generated = greedy_fill(
        config,
        params,
        batch["inputs"],
        positions["positions"],
        jnp.full((3,), width, jnp.int32),
        embed_positions=positions["embed_positions"],
    )
    np.testing.assert_array_equal(generated, jnp.argmax(full, axis=-1))


def test_causal_by_perturbation():
    """Another embed position (or token) at step t changes no logit before t."""
    config, params, batch, positions = _model("position_coupling")
    inputs = {"inputs": batch["inputs"]}
    logits = forward(config, params, inputs, positions)
    t = 6
    moved = {**positions, "embed_positions": positions["embed_positions"].at[:, t].add(3)}
    changed = forward(config, params, inputs, moved)
    np.testing.assert_array_equal(changed[:, :t], logits[:, :t])
    assert np.abs(changed[:, t:] - logits[:, t:]).max() > 1e-4


def test_model_positions_draws_offsets_in_training_only():
    config, _, batch, _ = _model("abacus", max_offset=50)
    evaluation = model_positions(config, batch, jax.random.key(4))
    np.testing.assert_array_equal(
        evaluation["embed_positions"], pj.functional.abacus_positions(batch["task_positions"], 0)
    )
    shifted = [
        model_positions(config, batch, jax.random.key(seed), training=True)["embed_positions"]
        for seed in range(4)
    ]
    assert any(np.abs(ids - evaluation["embed_positions"]).max() > 0 for ids in shifted)
    # Other encodings keep their positions: no embed positions of their own.
    rope = pj.models.TransformerConfig(vocab_size=13, encoding=pj.encodings.get("rope"))
    assert "embed_positions" not in model_positions(rope, batch, jax.random.key(4), training=True)
