"""Every task at one length and at lengths of its own, checked by plain-Python references.

Each reference reads a row's real tokens (the prompt up to the first answer target) and
computes the answer the task should ask for, with Python's integers and ``eval``; the
task's targets on the weighted positions must be exactly that. The same references check
batches where every example draws its own length (``min_length``): a padded row's real
tokens must be an example of its own length, with padding (token 0, weight 0, masked)
after it.
"""

import functools

import jax
import numpy as np
import pytest

from posenc_jax.data import get_task, task_names
from posenc_jax.data.char_lm import CharLM, CharVocabulary
from posenc_jax.data.task import pad_batch

TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen jugs.\n" * 3
VOCABULARY = CharVocabulary.from_text(TEXT)
BATCH, LENGTH = 96, 7


def _bits(tokens, zero):
    return [int(t) - zero for t in tokens]


def _value(bits):
    return sum(bit << place for place, bit in enumerate(bits))


def _value_10(digits):
    return sum(d * 10**place for place, d in enumerate(digits))


def _string(prompt):
    return [int(t) for t in prompt[:-1]]  # x_1 .. x_n before the separator


def _eval_tokens(tokens, operator_names, first_number):
    """The Python expression of arithmetic tokens."""
    return "".join(
        str(int(t) - first_number) if t >= first_number else operator_names[int(t)] for t in tokens
    )


def _reference(name, task, prompt):
    """The answer tokens the task should ask for after ``prompt`` (its real tokens)."""
    if name == "copy":
        return _string(prompt)
    if name == "reverse":
        return _string(prompt)[::-1]
    if name in ("sort", "bucket_sort"):
        return sorted(_string(prompt))
    if name == "duplicate_string":
        return _string(prompt) * 2
    if name == "parity":
        return [2 + sum(_bits(prompt[:-1], 2)) % 2]
    if name == "even_pairs":
        bits = _bits(prompt[:-1], 2)
        return [2 + sum(a != b for a, b in zip(bits, bits[1:], strict=False)) % 2]
    if name in ("binary_addition", "binary_multiplication"):
        operator = prompt.tolist().index(1)
        a, b = _bits(prompt[:operator], 3), _bits(prompt[operator + 1 : -1], 3)
        assert len(a) == len(b) and prompt[-1] == 2
        if name == "binary_addition":
            total, width = _value(a) + _value(b), len(a) + 1
        else:
            total, width = _value(a) * _value(b), 2 * len(a)
        return [3 + (total >> place) % 2 for place in range(width)]
    if name == "addition":
        plus, equals = prompt.tolist().index(1), len(prompt) - 1
        a, b = _bits(prompt[:plus], 3), _bits(prompt[plus + 1 : equals], 3)
        assert prompt[equals] == 2 and all(0 <= d <= 9 for d in a + b)
        total = _value_10(a) + _value_10(b)
        return [3 + (total // 10**place) % 10 for place in range(max(len(a), len(b)) + 1)]
    if name in ("modular_arithmetic", "modular_arithmetic_brackets"):
        assert prompt[-1] == 1
        first = 5 if name == "modular_arithmetic" else 7
        text = _eval_tokens(prompt[:-1], {2: "+", 3: "-", 4: "*", 5: "(", 6: ")"}, first)
        return [first + eval(text) % task.modulus]
    if name == "associative_recall":
        pairs = prompt[:-2].reshape(-1, 2)
        assert prompt[-2] == 1
        return [dict(pairs.tolist())[int(prompt[-1])]]
    if name == "block_finding":
        mark = prompt.tolist().index(2)
        blocks = prompt[:mark].tolist() + [1]
        query = set(prompt[mark + 1 :].tolist())
        found = []
        block = []
        for token in blocks:
            if token == 1:
                if query <= set(block):
                    found.append(block)
                block = []
            else:
                block.append(token)
        assert len(found) == 1, (blocks, query)
        return found[0]
    if name == "stack_manipulation":
        stack = []
        for token in prompt[:-1].tolist():
            if token in (2, 3):
                stack.append(token)
            elif token == 4:
                stack = stack[:-1]
            else:
                stack.append(token - 3)  # PUSH 0 -> 2, PUSH 1 -> 3
        return stack[::-1] + [7]
    raise AssertionError(f"no reference for {name}")


TASKS = {name: get_task(name) for name in task_names() if name != "char_lm"}
TASKS["modular_arithmetic_brackets"] = get_task("modular_arithmetic_brackets", multiplication=True)
TASKS["associative_recall"] = get_task("associative_recall", num_keys=12, num_values=5)


@functools.cache
def _sampler(name, ragged):
    task = TASKS[name]
    if ragged:
        return jax.jit(lambda key: task.sample(key, BATCH, LENGTH, min_length=1))
    return jax.jit(lambda key: task.sample(key, BATCH, LENGTH))


def _rows(batch):
    """Per row: (real tokens, weights over them) — the inputs then the last target."""
    inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    weights = np.asarray(batch["weights"]) > 0
    real = np.asarray(batch.get("padding_mask", np.ones(inputs.shape, bool)))
    for row in range(inputs.shape[0]):
        n = int(real[row].sum())
        assert real[row, :n].all() and not real[row, n:].any(), "padding must follow"
        assert not weights[row, n:].any() and not inputs[row, n:].any()
        sequence = np.concatenate([inputs[row, :n], targets[row, n - 1 : n]])
        np.testing.assert_array_equal(targets[row, : n - 1], inputs[row, 1:n])
        yield sequence, weights[row, :n]


def _check_answers(name, batch):
    task = TASKS[name]
    for sequence, weights in _rows(batch):
        start = int(np.argmax(weights))
        assert weights[start:].all() and not weights[:start].any(), "one answer, at the end"
        prompt, answer = sequence[: start + 1], sequence[start + 1 :]
        assert sequence.min() >= 1 and sequence.max() < task.vocab_size
        assert answer.tolist() == _reference(name, task, prompt), (name, prompt)


def test_every_task_has_a_reference():
    assert set(TASKS) | {"char_lm"} == set(task_names())


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_at_one_length(name):
    batch = _sampler(name, False)(jax.random.key(0))
    assert batch["inputs"].shape == (BATCH, TASKS[name].sequence_length(LENGTH))
    _check_answers(name, batch)


@pytest.mark.parametrize("name", sorted(TASKS))
def test_answers_at_lengths_of_their_own(name):
    """Each row is an example of its own length, padded to the width of LENGTH."""
    task = TASKS[name]
    batch = _sampler(name, True)(jax.random.key(1))
    assert batch["inputs"].shape == (BATCH, task.sequence_length(LENGTH))
    assert batch["padding_mask"].dtype == bool
    _check_answers(name, batch)
    real = np.asarray(batch["padding_mask"]).sum(axis=1)
    # Every length from 1 to LENGTH occurs (96 draws of 7 values).
    widths = {task.sequence_length(n) for n in range(1, LENGTH + 1)}
    # Their widths vary within one length: stack_manipulation's answer, addition's operands
    # (each draws its own digit count).
    if name not in ("stack_manipulation", "addition"):
        assert set(real.tolist()) == widths


def test_min_length_equal_to_length_is_the_one_length_batch():
    task = TASKS["reverse"]
    one = task.sample(jax.random.key(2), 8, 5)
    ranged = task.sample(jax.random.key(2), 8, 5, min_length=5)
    assert np.asarray(ranged.pop("padding_mask")).all()
    for key in one:
        np.testing.assert_array_equal(one[key], ranged[key])


@pytest.mark.parametrize("bad", [0, 8, 2.5, "3"])
def test_bad_min_length_is_named(bad):
    with pytest.raises(ValueError, match="min_length"):
        TASKS["copy"].sample(jax.random.key(0), 2, 7, min_length=bad)


def test_bucket_sort_is_sort_over_its_vocabulary():
    for size in (3, 5):
        one = get_task("bucket_sort", alphabet_size=size).sample(jax.random.key(4), 16, 9)
        two = get_task("sort", alphabet_size=size).sample(jax.random.key(4), 16, 9)
        for key in one:
            np.testing.assert_array_equal(one[key], two[key])


def test_brackets_nest_and_every_length_is_reachable():
    task = TASKS["modular_arithmetic_brackets"]
    for length in (1, 2, 3, 4, 9):
        batch = task.sample(jax.random.key(length), 64, length)
        expressions = np.asarray(batch["inputs"])[:, :length]
        depth = np.cumsum((expressions == 5).astype(int) - (expressions == 6), axis=1)
        assert (depth >= 0).all() and (depth[:, -1] == 0).all()
    assert (expressions == 5).any() and (expressions == 4).any()


def test_char_lm_windows_of_their_own_length():
    task = CharLM(corpus=TEXT, vocabulary=VOCABULARY)
    batch = task.sample(jax.random.key(0), 32, 12, min_length=3)
    real = np.asarray(batch["padding_mask"])
    np.testing.assert_array_equal(np.asarray(batch["weights"]) > 0, real)
    for sequence, _ in _rows(batch):
        assert VOCABULARY.decode(sequence) in TEXT
    assert set(real.sum(1).tolist()) <= set(range(3, 13)) and len(set(real.sum(1))) > 3


def test_pad_batch_keeps_the_examples_and_marks_the_padding():
    batch = TASKS["copy"].sample(jax.random.key(5), 4, 3)
    padded = pad_batch(batch, 10)
    assert padded["inputs"].shape == (4, 10)
    np.testing.assert_array_equal(padded["inputs"][:, :6], batch["inputs"])
    assert np.asarray(padded["padding_mask"][:, :6]).all()
    assert not np.asarray(padded["padding_mask"][:, 6:]).any()
    assert not np.asarray(padded["weights"][:, 6:]).any()
    # At its own width a batch gains only the mask (one structure for every width).
    same = pad_batch(batch, 6)
    assert np.asarray(same.pop("padding_mask")).all()
    assert all(np.array_equal(same[k], batch[k]) for k in batch)
    with pytest.raises(ValueError, match="cannot pad inputs of width 6 to 5"):
        pad_batch(batch, 5)
