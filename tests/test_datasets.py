"""TFDS builders: fixed evaluation sets and local text corpora, built and read offline.

Every test runs with outgoing network connections refused, so nothing can download.
"""

import fcntl
import os
import socket
import threading
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from posenc_jax.data import corpus as corpus_lib
from posenc_jax.data import get_task
from posenc_jax.data.corpus import LocalTextCorpus, load_corpus, local_text_config
from posenc_jax.data.eval_sets import (
    build_eval_set,
    eval_set_batches,
    eval_set_config,
    open_eval_set,
)

TEXT = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n"
    "All:\nSpeak, speak.\n\nFirst Citizen:\nYou are all resolved rather to die than to famish?\n"
    "Señor — naïve café: ünïcödé survives the round trip.\n"
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("tests must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _rows(batch):
    return {name: np.asarray(values) for name, values in batch.items()}


@pytest.mark.parametrize(
    ("task", "length"),
    [
        (get_task("copy"), 4),
        (get_task("binary_addition"), 3),
        (get_task("associative_recall", num_keys=6, num_values=3), 5),
    ],
)
def test_eval_set_reads_back_the_sampled_examples(tmp_path, task, length):
    num_examples, seed = 7, 11
    source = build_eval_set(task, length, num_examples=num_examples, seed=seed, data_dir=tmp_path)
    # Jitted like the builder's own sampling (test_tasks checks jit == eager).
    sample = jax.jit(task.sample, static_argnums=(1, 2))
    expected = _rows(sample(jax.random.key(seed), num_examples, length))
    assert len(source) == num_examples
    for index in range(num_examples):
        example = source[index]
        assert set(example) == set(expected)
        for name, values in expected.items():
            assert example[name].dtype == values.dtype
            np.testing.assert_array_equal(example[name], values[index])

    batches = list(eval_set_batches(source, batch_size=3))
    assert [b["inputs"].shape[0] for b in batches] == [3, 3, 1]
    for name, values in expected.items():
        np.testing.assert_array_equal(np.concatenate([b[name] for b in batches]), values)


def test_eval_set_is_built_once_and_found_by_name(tmp_path):
    source = build_eval_set("parity", 5, num_examples=4, seed=0, data_dir=tmp_path)
    config = eval_set_config("parity", 5, num_examples=4, seed=0)
    directory = tmp_path / "task_eval_set" / config.name / "1.0.0"
    records = sorted(directory.glob("*.array_record*"))
    assert records, list(directory.iterdir())
    stamps = [os.stat(path).st_mtime_ns for path in records]
    again = build_eval_set(get_task("parity"), 5, num_examples=4, seed=0, data_dir=tmp_path)
    assert [os.stat(path).st_mtime_ns for path in records] == stamps
    by_name = tfds.data_source(f"task_eval_set/{config.name}", split="test", data_dir=tmp_path)
    for index in range(4):
        np.testing.assert_array_equal(again[index]["inputs"], source[index]["inputs"])
        np.testing.assert_array_equal(by_name[index]["inputs"], source[index]["inputs"])


def test_a_set_is_opened_only_once_written_and_its_writers_take_turns(tmp_path):
    config = eval_set_config("parity", 5, num_examples=4, seed=0)
    with pytest.raises(FileNotFoundError, match=r"parity_len5_seed0_n4_\w+ is not in"):
        open_eval_set(config, tmp_path)
    # Another writer (an independent job sharing the work dir) holds the set's lock: this
    # one waits for it instead of writing beside it.
    lock = os.open(tmp_path / f".{config.name}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock, fcntl.LOCK_EX)
    built = []
    writer = threading.Thread(
        target=lambda: built.append(
            build_eval_set("parity", 5, num_examples=4, seed=0, data_dir=tmp_path)
        )
    )
    writer.start()
    time.sleep(1.0)
    assert writer.is_alive() and not (tmp_path / "task_eval_set").exists()
    os.close(lock)
    writer.join(timeout=120)
    assert len(built) == 1 and len(built[0]) == 4
    opened = open_eval_set(config, tmp_path)
    np.testing.assert_array_equal(opened[3]["inputs"], built[0][3]["inputs"])


def test_eval_set_names_are_distinct():
    def name(task, length=4, n=8, seed=0):
        return eval_set_config(task, length, num_examples=n, seed=seed).name

    base = name(get_task("copy"))
    assert base == name("copy") == name(get_task("copy", alphabet_size=8))
    assert base.startswith("copy_len4_seed0_n8_")
    variants = [
        name(get_task("copy", alphabet_size=9)),
        name(get_task("copy"), length=5),
        name(get_task("copy"), n=9),
        name(get_task("copy"), seed=1),
        name(get_task("reverse")),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_eval_set_rejects_bad_sizes(tmp_path):
    with pytest.raises(ValueError, match="num_examples"):
        build_eval_set("copy", 4, num_examples=0, seed=0, data_dir=tmp_path)
    with pytest.raises(ValueError, match="length must be positive"):
        build_eval_set("copy", 0, num_examples=3, seed=0, data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown task"):
        build_eval_set("no_such_task", 4, num_examples=3, seed=0, data_dir=tmp_path)


def _write(tmp_path, text, name="corpus.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_local_text_builder_splits_a_file(tmp_path, monkeypatch):
    # Small records, so the text spans several and their order is exercised.
    monkeypatch.setattr(corpus_lib, "_CHUNK_CHARACTERS", 13)
    path = _write(tmp_path, TEXT)
    config = local_text_config(path, validation_fraction=0.25)
    LocalTextCorpus(config=config, data_dir=tmp_path / "tfds").download_and_prepare()
    splits = tfds.data_source(
        f"local_text_corpus/{config.name}",
        split=["train", "validation"],
        data_dir=tmp_path / "tfds",
    )
    train, validation = ("".join(r["text"].decode() for r in split) for split in splits)
    assert len(splits[0]) == -(-len(train) // 13) > 1
    assert train + validation == TEXT
    assert len(validation) == round(0.25 * len(TEXT))


def test_load_corpus_from_a_file(tmp_path):
    path = _write(tmp_path, TEXT)
    corpus = load_corpus(path, str(tmp_path / "tfds"))
    vocabulary = corpus.vocabulary
    assert vocabulary.characters == "".join(sorted(set(TEXT)))
    assert corpus.train.dtype == np.int32 and corpus.validation.dtype == np.int32
    train, validation = vocabulary.decode(corpus.train), vocabulary.decode(corpus.validation)
    assert train + validation == TEXT
    assert len(validation) == round(0.1 * len(TEXT))

    task = corpus.task()
    assert task.vocab_size == len(set(TEXT)) + 1
    batch = task.sample(jax.random.key(0), 4, 16)
    for inputs, targets in zip(batch["inputs"], batch["targets"], strict=True):
        assert vocabulary.decode(np.append(inputs, targets[-1])) in train
    # Evaluation reads the validation split, never the training text.
    held_out = task.held_out().sample(jax.random.key(0), 4, 8)
    for inputs, targets in zip(held_out["inputs"], held_out["targets"], strict=True):
        window = vocabulary.decode(np.append(inputs, targets[-1]))
        assert window in validation and window not in train


def test_edited_file_gets_a_new_configuration(tmp_path):
    path = _write(tmp_path, TEXT)
    first = local_text_config(path).name
    assert local_text_config(path).name == first
    assert local_text_config(path, validation_fraction=0.2).name != first
    _write(tmp_path, TEXT + "More.\n")
    assert local_text_config(path).name != first
    corpus = load_corpus(path, str(tmp_path / "tfds"))
    assert corpus.vocabulary.decode(corpus.validation).endswith("More.\n")


def test_missing_or_empty_corpus_file_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "nothing_here.txt")
    with pytest.raises(ValueError, match="nothing_here.txt.*does not exist"):
        load_corpus(missing, str(tmp_path / "tfds"))
    empty = _write(tmp_path, "", name="empty.txt")
    with pytest.raises(ValueError, match="empty.txt.*is empty"):
        load_corpus(empty, str(tmp_path / "tfds"))
    tiny = _write(tmp_path, "abc", name="tiny.txt")
    with pytest.raises(ValueError, match="at least 2"):
        load_corpus(tiny, str(tmp_path / "tfds"))
    with pytest.raises(ValueError, match="validation_fraction"):
        load_corpus(_write(tmp_path, TEXT), str(tmp_path / "tfds"), validation_fraction=1.0)


def test_load_corpus_by_tfds_name_with_mock_data(tmp_path):
    splits = {
        "train": [{"text": b"To be, or not"}, {"text": "to be: caf\u00e9".encode()}],
        "validation": [{"text": b"that is the question"}],
    }

    def as_data_source(builder, split, **kwargs):
        assert builder.name == "tiny_shakespeare"
        return [splits[s] for s in split]

    with tfds.testing.mock_data(
        policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source
    ):
        corpus = load_corpus("tiny_shakespeare", str(tmp_path))
    vocabulary = corpus.vocabulary
    assert vocabulary.decode(corpus.train) == "To be, or not\nto be: caf\u00e9"
    assert vocabulary.decode(corpus.validation) == "that is the question"


def test_python_docs_is_held_out_by_paragraph(tmp_path):
    """The offline corpus: CPython's documentation topics, split like a file, with no
    paragraph on both sides of the cut (the raw topics repeat whole sections)."""
    from pydoc_data.topics import topics

    raw = [p.strip() for name in sorted(topics) for p in topics[name].split("\n\n") if p.strip()]
    assert len(set(raw)) < len(raw)  # "compound" repeats "if", "while", ...: a real risk

    corpus = load_corpus("python_docs", str(tmp_path))
    train = corpus.vocabulary.decode(corpus.train)
    validation = corpus.vocabulary.decode(corpus.validation)
    assert train + validation == corpus_lib.python_docs_text()
    assert len(validation) == round(0.1 * (len(train) + len(validation)))
    train_paragraphs = {p.strip() for p in train.split("\n\n")}
    # The first validation paragraph is the rest of the one the cut went through.
    held_out = [p.strip() for p in validation.split("\n\n")[1:] if p.strip()]
    assert len(held_out) > 50
    assert not [p for p in held_out if p in train_paragraphs]
    # Every paragraph of the text is a paragraph of the topics, each once.
    paragraphs = [p.strip() for p in (train + validation).split("\n\n") if p.strip()]
    assert len(set(paragraphs)) == len(paragraphs) and set(paragraphs) == set(raw)
    # Another fraction is another build; the text of the interpreter names it.
    config = corpus_lib.python_docs_config(validation_fraction=0.2)
    assert config.name.startswith("cpython") and config.name.endswith("_val0p2")
    assert config.name != corpus_lib.python_docs_config().name
