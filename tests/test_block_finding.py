"""The block-finding task (Golovneva et al., "Multi-Token Attention", 2025, Sec. 3).

Every property is checked by parsing the generated tokens in numpy, independently of the
generator: layout, distinct letters, no distractor holding every query letter, and a
unique target block that is the answer.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.data import get_task, task_names
from posenc_jax.train.metrics import masked_metrics

DELIMITER, QUERY_MARK, FIRST_LETTER = 1, 2, 3

# One compiled sampler shared by the tests (tasks are frozen, hashable dataclasses).
_sample = jax.jit(
    lambda task, key, batch_size, length: task.sample(key, batch_size, length),
    static_argnums=(0, 2, 3),
)


def _parse(task, batch, num_blocks):
    """Splits each example into blocks, query and answer using only the token layout."""
    n, q = task.block_letters, task.query_letters
    inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    full = np.concatenate([inputs, targets[:, -1:]], axis=1)
    context = full[:, : num_blocks * (n + 1)].reshape(len(full), num_blocks, n + 1)
    return {
        "separators": context[:, :, n],
        "blocks": context[:, :, :n],
        "query": full[:, num_blocks * (n + 1) : num_blocks * (n + 1) + q],
        "answer": full[:, -n:],
        "full": full,
    }


def _holds_all(block, query):
    return set(query.tolist()) <= set(block.tolist())


@pytest.mark.parametrize(
    "kwargs,num_blocks",
    [
        ({}, 10),
        ({"block_letters": 4}, 7),
        ({"alphabet_size": 5, "block_letters": 3}, 12),
        ({"block_letters": 4, "query_letters": 3}, 1),
    ],
)
def test_layout_and_unique_target(kwargs, num_blocks):
    task = get_task("block_finding", **kwargs)
    batch_size = 256
    batch = _sample(task, jax.random.key(3), batch_size, num_blocks)
    n, q = task.block_letters, task.query_letters
    length = task.sequence_length(num_blocks)
    assert length == num_blocks * (n + 1) + q + n - 1
    for name in ("inputs", "targets", "weights"):
        assert batch[name].shape == (batch_size, length)
    np.testing.assert_array_equal(batch["targets"][:, :-1], batch["inputs"][:, 1:])
    # The loss counts exactly the n answer tokens, the last n targets.
    expected_weights = np.zeros(length)
    expected_weights[-n:] = 1.0
    np.testing.assert_array_equal(
        batch["weights"], np.broadcast_to(expected_weights, (batch_size, length))
    )

    parsed = _parse(task, batch, num_blocks)
    separators = parsed["separators"]
    assert np.all(separators[:, :-1] == DELIMITER) and np.all(separators[:, -1] == QUERY_MARK)
    letters = np.concatenate([parsed["blocks"].reshape(batch_size, -1), parsed["query"]], axis=1)
    assert letters.min() >= FIRST_LETTER and letters.max() < task.vocab_size
    for b in range(batch_size):
        blocks, query, answer = parsed["blocks"][b], parsed["query"][b], parsed["answer"][b]
        assert all(len(set(block.tolist())) == n for block in blocks)
        assert len(set(query.tolist())) == q
        holding = [i for i, block in enumerate(blocks) if _holds_all(block, query)]
        # Exactly one block holds every query letter (no distractor does), and it is the answer.
        assert len(holding) == 1
        np.testing.assert_array_equal(blocks[holding[0]], answer)


def test_deterministic_per_key():
    task = get_task("block_finding")
    first = _sample(task, jax.random.key(7), 4, 6)
    again = _sample(task, jax.random.key(7), 4, 6)
    other = _sample(task, jax.random.key(8), 4, 6)
    for name in first:
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["inputs"], other["inputs"])


def test_vmap_over_keys_matches_separate_calls():
    task = get_task("block_finding")
    keys = jax.random.split(jax.random.key(0), 3)
    batched = jax.jit(jax.vmap(lambda k: task.sample(k, 4, 6)))(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched["inputs"][i], _sample(task, keys[i], 4, 6)["inputs"])


def test_repair_is_exercised_with_a_small_alphabet():
    """With 5 letters and blocks of 4, a random block holds both query letters with
    probability C(3, 2) / C(5, 4) = 3/5; the repair must leave none, while distractors
    sharing one query letter remain."""
    task = get_task("block_finding", alphabet_size=5, block_letters=4, query_letters=2)
    num_blocks = 20
    parsed = _parse(task, _sample(task, jax.random.key(1), 64, num_blocks), num_blocks)
    shares_one = 0
    for blocks, query, answer in zip(
        parsed["blocks"], parsed["query"], parsed["answer"], strict=True
    ):
        distractors = [block for block in blocks if not np.array_equal(block, answer)]
        assert not any(_holds_all(block, query) for block in distractors)
        shares_one += sum(bool(set(query.tolist()) & set(block.tolist())) for block in distractors)
    assert shares_one > 0


def test_default_task_has_partial_matches_and_uniform_target_slot():
    """Distractors often share one query letter (so one letter alone does not find the block),
    and the target sits in every slot about equally often."""
    task = get_task("block_finding")
    num_blocks, batch_size = 5, 2000
    parsed = _parse(task, _sample(task, jax.random.key(2), batch_size, num_blocks), num_blocks)
    slots = np.zeros(num_blocks)
    partial = 0
    for blocks, query, answer in zip(
        parsed["blocks"], parsed["query"], parsed["answer"], strict=True
    ):
        slot = [i for i, block in enumerate(blocks) if np.array_equal(block, answer)]
        slots[slot[0]] += 1
        partial += any(
            set(query.tolist()) & set(block.tolist())
            for i, block in enumerate(blocks)
            if i != slot[0]
        )
    np.testing.assert_allclose(slots / batch_size, 1 / num_blocks, atol=0.04)
    # P(a distractor of 3 letters from 26 shares one of 2 query letters) is about 0.22, so
    # with 4 distractors about 63% of examples have at least one partial match.
    assert 0.5 < partial / batch_size < 0.75


def test_whole_block_error_is_one_minus_sequence_accuracy():
    task = get_task("block_finding")
    batch = _sample(task, jax.random.key(4), 4, 6)
    perfect = jax.nn.one_hot(batch["targets"], task.vocab_size) * 10.0
    assert (
        float(masked_metrics(perfect, batch["targets"], batch["weights"])["sequence_accuracy"])
        == 1.0
    )
    # One wrong letter in one answer block makes that example an error; a wrong token
    # outside the answer (no weight) does not.
    wrong = batch["targets"].at[0, -2].set(batch["targets"][0, -2] % task.vocab_size + 1)
    wrong = wrong.at[1, 0].set(batch["targets"][1, 0] % task.vocab_size + 1)
    logits = jax.nn.one_hot(wrong, task.vocab_size) * 10.0
    metrics = masked_metrics(logits, batch["targets"], batch["weights"])
    assert float(1.0 - metrics["sequence_accuracy"]) == pytest.approx(0.25)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"query_letters": 4}, "query_letters <= block_letters"),
        ({"query_letters": 0}, "1 <= query_letters"),
        ({"alphabet_size": 3}, "must exceed"),
    ],
)
def test_config_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        get_task("block_finding", **kwargs)


def test_size_errors_and_registration():
    assert "block_finding" in task_names()
    task = get_task("block_finding")
    assert task.vocab_size == 29
    with pytest.raises(ValueError, match="length must be positive"):
        task.sample(jax.random.key(0), 2, 0)
    with pytest.raises(ValueError, match="batch_size must be positive"):
        task.sample(jax.random.key(0), 0, 3)
    assert jnp.asarray(_sample(task, jax.random.key(0), 1, 1)["inputs"]).shape == (1, 4 + 2 + 2)
