"""Character-level language modelling: predict the next character of a text corpus."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from posenc_jax.data.task import Batch, Task, register_task
from posenc_jax.typing import Array

PAD = 0


@dataclasses.dataclass(frozen=True)
class CharVocabulary:
    """Characters and their token ids: ``characters[i]`` is token ``i + 1``, 0 is padding.

    Attributes:
      characters: the distinct characters of the vocabulary, in id order.
    """

    characters: str

    def __post_init__(self):
        if not self.characters:
            raise ValueError("a character vocabulary needs at least one character.")
        if len(set(self.characters)) != len(self.characters):
            repeated = sorted({c for c in self.characters if self.characters.count(c) > 1})
            raise ValueError(f"vocabulary characters must be distinct; repeated: {repeated!r}.")

    @classmethod
    def from_text(cls, text: str) -> "CharVocabulary":
        """The vocabulary of every character in ``text``, sorted by code point."""
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        """Number of token ids, padding included."""
        return len(self.characters) + 1

    def encode(self, text: str) -> np.ndarray:
        """Token ids int32 ``[len(text)]``.

        Raises:
          ValueError: naming the characters of ``text`` that are not in the vocabulary.
        """
        codes = _code_points(text)
        vocabulary_codes = _code_points(self.characters)
        order = np.argsort(vocabulary_codes)
        sorted_codes = vocabulary_codes[order]
        slot = np.minimum(np.searchsorted(sorted_codes, codes), len(sorted_codes) - 1)
        known = sorted_codes[slot] == codes
        if not np.all(known):
            unknown = sorted({chr(c) for c in codes[~known]})
            raise ValueError(
                f"text has {len(unknown)} character(s) outside the vocabulary: "
                f"{''.join(unknown[:20])!r}; build the vocabulary from all the text."
            )
        return (order[slot] + 1).astype(np.int32)

    def decode(self, ids) -> str:
        """The text of token ids (no padding); ValueError for an id outside ``1 .. size - 1``."""
        ids = np.asarray(ids)
        bad = ids[(ids < 1) | (ids >= self.size)]
        if bad.size:
            raise ValueError(
                f"token id {int(bad[0])} is not a character; valid ids are 1 .. {self.size - 1}."
            )
        return "".join(self.characters[i - 1] for i in ids.reshape(-1).tolist())


def _code_points(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


@register_task("char_lm")
@dataclasses.dataclass(frozen=True, eq=False)
class CharLM(Task):
    """Next-character prediction on random windows of a fixed corpus.

    ``sample(key, B, n)`` draws ``B`` windows of ``n + 1`` consecutive characters at
    uniform random offsets; the decoder reads the first ``n`` and predicts the last ``n``,
    every position weighted 1. The task length is the window in characters, so training
    at ``n`` and evaluating at ``8n`` asks the model to use contexts it never saw. For the
    evaluation protocols (non-overlapping and sliding windows, loss and bits per character
    by position) see ``posenc_jax.train.lm_eval``.

    Instances compare and hash by identity (the corpus is an array), so each one is its
    own key in compiled-function caches.

    Attributes:
      corpus: the training text, or its token ids (int ``[N]``, each in
        ``1 .. vocabulary.size - 1``); stored as int32 ids.
      vocabulary: the characters the ids stand for.
      held_out_corpus: text (or ids) kept out of training, which :meth:`held_out` (and so
        the study's evaluation) reads; :meth:`Corpus.task` gives the validation split.

    References:
      Al-Rfou et al., "Character-Level Language Modeling with Deeper Self-Attention", AAAI
      2019; Press, Smith & Lewis, "Train Short, Test Long" (ALiBi), ICLR 2022 (evaluation
      past the training length).
    """

    corpus: np.ndarray
    vocabulary: CharVocabulary
    held_out_corpus: np.ndarray | None = None

    # Task's field-wise equality would call two tasks on different corpora equal.
    __eq__ = object.__eq__
    __hash__ = object.__hash__

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "corpus", self._ids(self.corpus, "corpus"))
        if self.held_out_corpus is not None:
            held_out = self._ids(self.held_out_corpus, "held_out_corpus")
            object.__setattr__(self, "held_out_corpus", held_out)

    def _ids(self, corpus, name: str) -> np.ndarray:
        """A text's int32 ids, checked against the vocabulary."""
        if isinstance(corpus, str):
            corpus = self.vocabulary.encode(corpus)
        corpus = np.asarray(corpus)
        if corpus.ndim != 1 or not np.issubdtype(corpus.dtype, np.integer):
            raise ValueError(
                f"char_lm {name} must be text or 1-D integer ids; got dtype {corpus.dtype} "
                f"and shape {corpus.shape}."
            )
        if corpus.size < 2:
            raise ValueError(f"char_lm {name} needs at least 2 characters, got {corpus.size}.")
        low, high = int(corpus.min()), int(corpus.max())
        if low < 1 or high >= self.vocabulary.size:
            raise ValueError(
                f"char_lm {name} ids span {low} .. {high}, but the vocabulary's characters "
                f"are ids 1 .. {self.vocabulary.size - 1}."
            )
        return corpus.astype(np.int32)

    def held_out(self) -> "CharLM":
        """Next-character prediction on the held-out text.

        Raises:
          ValueError: the task has no ``held_out_corpus``; windows of the training text
            would measure memorization, not generalization.
        """
        if self.held_out_corpus is None:
            raise ValueError(
                "char_lm has no held_out_corpus, and evaluating on windows of its training "
                "text would measure memorization; build it with held_out_corpus= (e.g. "
                "load_corpus(...).task(), which holds out the validation split)."
            )
        return CharLM(corpus=self.held_out_corpus, vocabulary=self.vocabulary)

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.size

    def sequence_length(self, length: int) -> int:
        return length

    def _sample(self, key: Array, batch_size: int, length: int, lengths: Array | None) -> Batch:
        if length + 1 > self.corpus.size:
            raise ValueError(
                f"char_lm windows of {length} characters need a corpus of at least "
                f"{length + 1}; this one has {self.corpus.size}."
            )
        corpus = jnp.asarray(self.corpus)
        starts = jax.random.randint(key, (batch_size,), 0, self.corpus.size - length)
        windows = jax.vmap(lambda start: jax.lax.dynamic_slice(corpus, (start,), (length + 1,)))(
            starts
        )
        batch = {
            "inputs": windows[:, :-1],
            "targets": windows[:, 1:],
            "weights": jnp.ones((batch_size, length), jnp.float32),
        }
        if lengths is not None:
            # A window of n characters: the first n of the window, padding after.
            real = jnp.arange(length)[None, :] < lengths[:, None]
            batch = {
                "inputs": jnp.where(real, batch["inputs"], PAD),
                "targets": jnp.where(real, batch["targets"], PAD),
                "weights": real.astype(jnp.float32),
                "padding_mask": real,
            }
        return batch
