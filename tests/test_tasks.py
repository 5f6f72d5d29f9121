"""Algorithmic and language-modelling tasks: determinism, layout and correct answers.

Each answer is checked against a plain-Python reference computed from the example's own
prompt (Python integers for binary addition, Python's own ``eval`` for modular arithmetic).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from posenc_jax.data import get_task, task_names
from posenc_jax.data.char_lm import CharLM, CharVocabulary

TEXT = "It was the best of times, it was the worst of times; it was the age of wisdom.\n" * 4
VOCABULARY = CharVocabulary.from_text(TEXT)

#: name -> (task, task length, number of answer tokens at that length).
CASES = {
    "reverse": (get_task("reverse"), 6, 6),
    "sort": (get_task("sort"), 6, 6),
    "parity": (get_task("parity"), 7, 1),
    "binary_addition": (get_task("binary_addition"), 5, 6),
    "modular_arithmetic": (get_task("modular_arithmetic"), 5, 1),
    "associative_recall": (get_task("associative_recall", num_keys=8, num_values=4), 5, 1),
    "char_lm": (CharLM(corpus=TEXT, vocabulary=VOCABULARY), 12, 12),
}
BATCH = 64


@functools.cache
def _compiled_sample(task):
    # One compilation per task and shape keeps the file fast; eager sampling is checked
    # against it in test_deterministic_per_key_and_jit.
    return jax.jit(task.sample, static_argnums=(1, 2))


def _sample(name, seed=0, length=None, task=None):
    default_task, default_length, _ = CASES[name]
    task = task or default_task
    return _compiled_sample(task)(jax.random.key(seed), BATCH, length or default_length)


def _sequences(batch):
    """Whole token sequences ``[B, T + 1]``: the first input followed by every target."""
    return np.concatenate([np.asarray(batch["inputs"][:, :1]), np.asarray(batch["targets"])], 1)


def test_every_registered_task_is_covered():
    # The tasks of Delétang et al.'s suite added later are checked in test_tasks_lengths,
    # decimal addition there and in test_task_positions.
    later = {
        "addition",
        "binary_multiplication",
        "bucket_sort",
        "duplicate_string",
        "even_pairs",
        "modular_arithmetic_brackets",
        "stack_manipulation",
    }
    assert set(CASES) | {"copy", "block_finding"} | later == set(task_names())


@pytest.mark.parametrize("name", sorted(CASES))
def test_layout(name):
    task, length, answer_tokens = CASES[name]
    batch = _sample(name)
    assert set(batch) == {"inputs", "targets", "weights"}
    expected_shape = (BATCH, task.sequence_length(length))
    for key, dtype in (("inputs", jnp.int32), ("targets", jnp.int32), ("weights", jnp.float32)):
        assert batch[key].shape == expected_shape, key
        assert batch[key].dtype == dtype, key
    inputs, targets = np.asarray(batch["inputs"]), np.asarray(batch["targets"])
    # Teacher forcing: the target of position t is the input of position t + 1.
    np.testing.assert_array_equal(inputs[:, 1:], targets[:, :-1])
    # No padding inside a sequence, every token inside the vocabulary.
    assert inputs.min() >= 1 and targets.min() >= 1
    assert inputs.max() < task.vocab_size and targets.max() < task.vocab_size
    # The weights mark exactly the answer: the last answer_tokens positions of every row.
    expected = np.zeros(expected_shape, np.float32)
    expected[:, expected_shape[1] - answer_tokens :] = 1.0
    np.testing.assert_array_equal(np.asarray(batch["weights"]), expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_deterministic_per_key_and_jit(name):
    task, length, _ = CASES[name]
    first, again, other = _sample(name, 3), _sample(name, 3), _sample(name, 4)
    eager = task.sample(jax.random.key(3), BATCH, length)
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
        np.testing.assert_array_equal(first[key], eager[key])
    assert not np.array_equal(first["inputs"], other["inputs"])


@pytest.mark.parametrize("name", sorted(set(CASES) - {"char_lm"}))
def test_length_one_and_bad_sizes(name):
    task = CASES[name][0]
    batch = _compiled_sample(task)(jax.random.key(0), 2, 1)
    assert batch["inputs"].shape == (2, task.sequence_length(1))
    with pytest.raises(ValueError, match="length must be positive"):
        task.sample(jax.random.key(0), 2, 0)
    with pytest.raises(ValueError, match="batch_size"):
        task.sample(jax.random.key(0), 0, 3)


def _prompt_and_answer(batch, answer_tokens):
    sequences = _sequences(batch)
    return sequences[:, :-answer_tokens], sequences[:, -answer_tokens:]


def test_reverse_answers():
    prompt, answer = _prompt_and_answer(_sample("reverse"), 6)
    assert np.all(prompt[:, -1] == 1)
    for symbols, reversed_symbols in zip(prompt[:, :-1], answer, strict=True):
        assert list(reversed_symbols) == list(symbols)[::-1]


def test_sort_answers():
    prompt, answer = _prompt_and_answer(_sample("sort"), 6)
    assert np.all(prompt[:, -1] == 1)
    for symbols, sorted_symbols in zip(prompt[:, :-1], answer, strict=True):
        assert list(sorted_symbols) == sorted(symbols.tolist())
    # A 5-letter alphabet over 6 symbols forces repeats: buckets, not a permutation sort.
    assert any(len(set(row.tolist())) < 6 for row in prompt[:, :-1])


def test_parity_answers():
    prompt, answer = _prompt_and_answer(_sample("parity"), 1)
    assert np.all(prompt[:, -1] == 1)
    bits = prompt[:, :-1]
    assert set(np.unique(bits).tolist()) <= {2, 3}
    ones = [row.tolist().count(3) for row in bits]
    assert answer[:, 0].tolist() == [2 + count % 2 for count in ones]
    assert set(answer[:, 0].tolist()) == {2, 3}


def _little_endian_value(bit_tokens):
    return sum((token - 3) << place for place, token in enumerate(bit_tokens.tolist()))


@pytest.mark.parametrize("length", [5, 70])
def test_binary_addition_answers(length):
    # 70 bits: wider than any integer dtype, checked with Python's unbounded integers.
    prompt, answer = _prompt_and_answer(_sample("binary_addition", length=length), length + 1)
    a_bits, plus, b_bits, equals = np.split(prompt, [length, length + 1, 2 * length + 1], axis=1)
    assert np.all(plus == 1) and np.all(equals[:, 0] == 2) and equals.shape[1] == 1
    carries = 0
    for a, b, total in zip(a_bits, b_bits, answer, strict=True):
        assert set(total.tolist()) <= {3, 4}
        assert _little_endian_value(total) == _little_endian_value(a) + _little_endian_value(b)
        carries += int(total[-1] == 4)
    assert 0 < carries < len(answer)


@pytest.mark.parametrize("operators", [("+", "-", "*"), ("*", "-")])
def test_modular_arithmetic_answers(operators):
    task = get_task("modular_arithmetic", modulus=5, operators=operators)
    batch = _sample("modular_arithmetic", seed=1, task=task)
    prompt, answer = _prompt_and_answer(batch, 1)
    symbol = {2: "+", 3: "-", 4: "*"} | {5 + v: str(v) for v in range(5)}
    assert np.all(prompt[:, -1] == 1)
    for expression, result in zip(prompt[:, :-1], answer[:, 0], strict=True):
        text = "".join(symbol[token] for token in expression.tolist())
        assert set(text[1::2]) <= set(operators)
        # Python applies * before + and -, and its % of a negative number is non-negative.
        assert result - 5 == eval(text) % 5, text
    assert len(set(answer[:, 0].tolist())) > 1


def test_modular_arithmetic_paper_examples():
    # Delétang et al.'s examples modulo 5, evaluated by the task's own evaluator.
    from posenc_jax.data.modular_arithmetic import OPERATOR_TOKENS, _evaluate

    def value(numbers, operators):
        ops = jnp.asarray([[OPERATOR_TOKENS[o] for o in operators]], jnp.int32)
        return int(_evaluate(jnp.asarray([numbers]), ops.reshape(1, len(operators)), 5)[0])

    assert value([1, 2, 3], "+*") == 2
    assert value([1, 1, 1], "--") == 4
    assert value([0, 1, 4, 3, 2], "*+*-") == 0


def test_associative_recall_answers():
    task, length, _ = CASES["associative_recall"]
    prompt, answer = _prompt_and_answer(_sample("associative_recall", seed=2), 1)
    first_value = 2 + task.num_keys
    for row, value in zip(prompt, answer[:, 0], strict=True):
        keys, values = row[: 2 * length : 2], row[1 : 2 * length : 2]
        assert len(set(keys.tolist())) == length
        assert np.all((keys >= 2) & (keys < first_value)) and np.all(values >= first_value)
        assert row[2 * length] == 1
        assert value == dict(zip(keys.tolist(), values.tolist(), strict=True))[row[-1]]


def test_associative_recall_length_limit():
    with pytest.raises(ValueError, match="exceeds num_keys=8"):
        CASES["associative_recall"][0].sample(jax.random.key(0), 2, 9)


def test_char_lm_windows_come_from_the_corpus():
    batch = _sample("char_lm")
    for window in _sequences(batch):
        assert VOCABULARY.decode(window) in TEXT
    starts = {VOCABULARY.decode(window) for window in _sequences(batch)}
    assert len(starts) > 1


def test_char_vocabulary_round_trip_and_errors():
    text = "héllo, wörld"
    vocabulary = CharVocabulary.from_text(text)
    ids = vocabulary.encode(text)
    assert ids.dtype == np.int32 and ids.min() == 1 and ids.max() == len(set(text))
    assert vocabulary.decode(ids) == text
    assert vocabulary.characters == "".join(sorted(set(text)))
    with pytest.raises(ValueError, match="'z'"):
        vocabulary.encode("hölz")
    with pytest.raises(ValueError, match="token id 0"):
        vocabulary.decode([0, 1])
    with pytest.raises(ValueError, match="distinct"):
        CharVocabulary("aba")


def test_char_lm_rejects_bad_corpora_and_long_windows():
    with pytest.raises(ValueError, match="ids span 0"):
        CharLM(corpus=np.array([0, 1, 2]), vocabulary=VOCABULARY)
    with pytest.raises(ValueError, match="1-D"):
        CharLM(corpus=np.ones((2, 3), np.int32), vocabulary=VOCABULARY)
    task = CharLM(corpus="it was", vocabulary=VOCABULARY)
    assert task.sample(jax.random.key(0), 2, 5)["inputs"].shape == (2, 5)
    with pytest.raises(ValueError, match="at least 7; this one has 6"):
        task.sample(jax.random.key(0), 2, 6)


def test_generated_tasks_are_their_own_held_out_task_and_char_lm_needs_held_out_text():
    assert CASES["reverse"][0].held_out() is CASES["reverse"][0]
    with pytest.raises(ValueError, match="char_lm has no held_out_corpus"):
        CASES["char_lm"][0].held_out()
    task = CharLM(corpus=TEXT, vocabulary=VOCABULARY, held_out_corpus="it was")
    assert VOCABULARY.decode(task.held_out().corpus) == "it was"
    with pytest.raises(ValueError, match="held_out_corpus ids span 0"):
        CharLM(corpus=TEXT, vocabulary=VOCABULARY, held_out_corpus=np.array([0, 1]))


def test_char_lm_tasks_are_distinct_cache_keys():
    one = CharLM(corpus=TEXT, vocabulary=VOCABULARY)
    two = CharLM(corpus=TEXT, vocabulary=VOCABULARY)
    assert one == one and one != two and len({one, two}) == 2


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        ("reverse", {"alphabet_size": 1}, "alphabet_size"),
        ("sort", {"alphabet_size": 1}, "alphabet_size"),
        ("modular_arithmetic", {"modulus": 1}, "modulus"),
        ("modular_arithmetic", {"operators": ("/",)}, "operators"),
        ("modular_arithmetic", {"operators": ("+", "+")}, "operators"),
        ("associative_recall", {"num_values": 1}, "num_values"),
    ],
)
def test_bad_task_settings(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_task(name, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "field"),
    [
        ("copy", {"alphabet_size": 8.5}, "alphabet_size"),
        ("modular_arithmetic", {"modulus": 5.5}, "modulus"),
        ("associative_recall", {"num_keys": 3.5}, "num_keys"),
        ("block_finding", {"block_letters": True}, "block_letters"),
    ],
)
def test_fractional_task_sizes_are_named(name, kwargs, field):
    """Copy(alphabet_size=8.5) built a vocabulary of 10.5; others failed inside JAX."""
    with pytest.raises(ValueError, match=f"{name} {field} must be an integer"):
        get_task(name, **kwargs)
    with pytest.raises(ValueError, match="length must be an integer, got 2.5"):
        get_task(name).sample(jax.random.key(0), 2, 2.5)
