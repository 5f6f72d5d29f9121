"""Text corpora for character-level language modelling, through TensorFlow Datasets.

``load_corpus`` accepts a local text file, the name ``python_docs``, or a TFDS dataset
name. A file goes through ``LocalTextCorpus``, a builder that writes the text's train and
validation splits (the last ``validation_fraction`` of the characters) as array_record
files, so it needs no TensorFlow and no network. ``python_docs`` goes through
``PythonDocs``, the same split of a text every CPython installation ships (the
documentation topics of ``help()``, see :func:`python_docs_text`): an offline corpus. A
name such as ``tiny_shakespeare`` or ``lm1b`` is prepared by TFDS itself (network access
and that dataset's own dependencies, e.g. TensorFlow for ``tiny_shakespeare``, as on
Colab).
"""

import dataclasses
import hashlib
import os
import re
import sys

import numpy as np
import tensorflow_datasets as tfds

from posenc_jax.data._tfds import ArrayRecordBuilder
from posenc_jax.data.char_lm import CharLM, CharVocabulary

#: Characters per stored record: records stay small whatever the size of the text.
_CHUNK_CHARACTERS = 1 << 20


@dataclasses.dataclass(eq=False)
class TextSplitConfig(tfds.core.BuilderConfig):
    """The share of a text kept for validation.

    Attributes:
      validation_fraction: share of the characters, taken from the end, in ``validation``.
    """

    validation_fraction: float = 0.1


@dataclasses.dataclass(eq=False)
class LocalTextConfig(TextSplitConfig):
    """A local text file and the share of it kept for validation.

    Attributes:
      path: the UTF-8 text file.
    """

    path: str = ""


class _TextSplits(ArrayRecordBuilder, skip_registration=True):
    """A text as ``train`` and ``validation`` splits of ordered ``text`` chunks: the last
    ``validation_fraction`` of its characters is the validation split, the rest train."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    DESCRIPTION = ""

    def _text(self) -> str:
        """The whole text, before the split."""
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=tfds.features.FeaturesDict({"text": tfds.features.Text()}),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        train, validation = _split_text(self._text(), self.builder_config.validation_fraction)
        return {
            "train": self._generate_examples(train),
            "validation": self._generate_examples(validation),
        }

    def _generate_examples(self, text: str):
        for index, start in enumerate(range(0, len(text), _CHUNK_CHARACTERS)):
            yield index, {"text": text[start : start + _CHUNK_CHARACTERS]}


class LocalTextCorpus(_TextSplits):
    """A text file as ``train`` and ``validation`` splits of ordered ``text`` chunks.

    Build it through ``local_text_config`` (which names the configuration after the file's
    content, so an edited file gets a fresh build) and read it back with
    ``tfds.data_source``; ``load_corpus`` does both.
    """

    DESCRIPTION = "A local UTF-8 text file split into train and validation text."

    def _text(self) -> str:
        return _read_text(self.builder_config.path)


class PythonDocs(_TextSplits):
    """:func:`python_docs_text` as ``train`` and ``validation`` splits: an offline corpus.

    Build it through ``python_docs_config`` (named after the interpreter and the text's
    content); ``load_corpus("python_docs")`` builds and reads it.
    """

    DESCRIPTION = (
        "The documentation topics shipped with CPython (pydoc_data.topics), each paragraph "
        "once, split into train and validation text."
    )

    def _text(self) -> str:
        return python_docs_text()


def python_docs_text() -> str:
    """The text of the offline corpus: CPython's documentation topics, each paragraph once.

    ``pydoc_data.topics.topics`` maps each topic of ``help()`` (a statement, an expression,
    a built-in type: sections of the Python Language and Library References such as
    ``"assert"`` or ``"typesseq"``) to its plain text; every CPython installation ships it,
    so the corpus needs no download. The topics are taken in sorted name order and joined
    by blank lines, and a paragraph (text between blank lines) whose stripped text already
    appeared is left out: topics such as ``compound`` repeat whole sections of others
    (``if``, ``while``, ``def``), and those repeats would otherwise put the same paragraph
    on both sides of the train/validation cut. The text depends on the Python version
    (3.11.7: 79 topics, 464,970 characters, 373,292 with each paragraph once).

    Returns:
      the text; no paragraph of it occurs twice.
    """
    from pydoc_data.topics import topics

    seen = set()
    kept_topics = []
    for name in sorted(topics):
        paragraphs = []
        for paragraph in topics[name].split("\n\n"):
            key = paragraph.strip()
            if key and key not in seen:
                seen.add(key)
                paragraphs.append(paragraph)
        if paragraphs:
            kept_topics.append("\n\n".join(paragraphs))
    return "\n\n".join(kept_topics)


def _read_text(path: str) -> str:
    if not os.path.isfile(path):
        raise ValueError(f"corpus file {path!r} does not exist (or is not a file).")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"corpus file {path!r} is not UTF-8 text: {error}.") from error
    if not text:
        raise ValueError(f"corpus file {path!r} is empty.")
    return text


def _split_text(text: str, validation_fraction: float) -> tuple[str, str]:
    cut = len(text) - int(round(len(text) * validation_fraction))
    if cut < 2 or len(text) - cut < 2:
        raise ValueError(
            f"a validation_fraction of {validation_fraction} splits {len(text)} characters "
            f"into {cut} for training and {len(text) - cut} for validation; each needs at "
            "least 2 (a longer text or another fraction)."
        )
    return text[:cut], text[cut:]


def _config_name(stem: str, text: str, validation_fraction: float) -> str:
    """``<stem>_<content digest>_val<fraction>``: another text or fraction, another name."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction}.")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    stem = re.sub(r"[^a-z0-9]+", "_", stem.lower()).strip("_") or "text"
    fraction = f"{validation_fraction:.6f}".rstrip("0").replace(".", "p")
    return f"{stem}_{digest}_val{fraction}"


def local_text_config(path: str, *, validation_fraction: float = 0.1) -> LocalTextConfig:
    """The ``LocalTextCorpus`` configuration of a file, named after its content.

    Raises:
      ValueError: if the file is missing or empty, or the fraction is not in (0, 1).
    """
    path = os.path.abspath(os.path.expanduser(path))
    stem = os.path.splitext(os.path.basename(path))[0]
    return LocalTextConfig(
        name=_config_name(stem, _read_text(path), validation_fraction),
        description=f"{path} with the last {validation_fraction:.2%} as validation.",
        path=path,
        validation_fraction=validation_fraction,
    )


def python_docs_config(*, validation_fraction: float = 0.1) -> TextSplitConfig:
    """The ``PythonDocs`` configuration of this interpreter's documentation topics, named
    after the Python version and the text's content.

    Raises:
      ValueError: if the fraction is not in (0, 1).
    """
    version = "_".join(str(part) for part in sys.version_info[:3])
    return TextSplitConfig(
        name=_config_name(f"cpython{version}", python_docs_text(), validation_fraction),
        description=f"Python {sys.version.split()[0]}'s documentation topics with the last "
        f"{validation_fraction:.2%} as validation.",
        validation_fraction=validation_fraction,
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
    """Train and validation token ids of a text, with the vocabulary they use.

    Attributes:
      train: int32 ``[N_train]`` ids.
      validation: int32 ``[N_validation]`` ids.
      vocabulary: every character of both splits.
    """

    train: np.ndarray
    validation: np.ndarray
    vocabulary: CharVocabulary

    def task(self) -> CharLM:
        """The character-level language-modelling task over the training split, holding out
        the validation split for evaluation (:meth:`CharLM.held_out`)."""
        return CharLM(
            corpus=self.train, vocabulary=self.vocabulary, held_out_corpus=self.validation
        )


def load_corpus(
    name_or_path: str,
    data_dir: str | os.PathLike | None = None,
    *,
    validation_fraction: float = 0.1,
    validation_split: str = "validation",
    text_feature: str = "text",
) -> Corpus:
    """Loads a text corpus as character ids: a local file, the offline ``python_docs``, or a
    TFDS dataset.

    A local file is recognised by existing, by starting with ``/``, ``.`` or ``~``, or by
    ending in ``.txt``. ``"python_docs"`` is :func:`python_docs_text`, the documentation
    every CPython ships (no download). Anything else is a TFDS name (``"tiny_shakespeare"``,
    ``"lm1b"``), whose ``train`` and ``validation_split`` splits are read and whose
    examples' ``text_feature`` strings are joined by newlines.

    Args:
      name_or_path: a text file, ``"python_docs"`` or a TFDS dataset name.
      data_dir: where TFDS keeps prepared datasets (its default when None).
      validation_fraction: for a file or ``python_docs``, the share of characters (from
        the end) held out.
      validation_split: for a TFDS name, the held-out split (``"test"`` for lm1b).
      text_feature: for a TFDS name, the feature that holds the text.

    Returns:
      the ``Corpus``; its vocabulary is every character of both splits.

    Raises:
      ValueError: for a missing or empty file or a split too short to use.
    """
    if _is_path(name_or_path):
        config = local_text_config(name_or_path, validation_fraction=validation_fraction)
        builder = LocalTextCorpus(config=config, data_dir=data_dir)
    elif name_or_path == PythonDocs.name:
        config = python_docs_config(validation_fraction=validation_fraction)
        builder = PythonDocs(config=config, data_dir=data_dir)
    else:
        builder = None
    if builder is not None:
        # The package's own builders: one text cut into chunks, joined back as it was.
        builder.download_and_prepare()
        sources = builder.as_data_source(split=["train", "validation"])
        train, validation = (_join(source, "text", "") for source in sources)
    else:
        sources = tfds.data_source(
            name_or_path,
            split=["train", validation_split],
            data_dir=data_dir,
            builder_kwargs={"file_format": "array_record"},
        )
        train, validation = (_join(source, text_feature, "\n") for source in sources)
    for split, text in (("train", train), (validation_split, validation)):
        if len(text) < 2:
            raise ValueError(f"corpus {name_or_path!r} split {split!r} has under 2 characters.")
    vocabulary = CharVocabulary.from_text(train + validation)
    return Corpus(vocabulary.encode(train), vocabulary.encode(validation), vocabulary)


def _is_path(name_or_path: str) -> bool:
    return (
        os.path.exists(os.path.expanduser(name_or_path))
        or name_or_path.startswith(("/", ".", "~"))
        or name_or_path.endswith(".txt")
    )


def _join(source, feature: str, separator: str) -> str:
    pieces = []
    for index in range(len(source)):
        value = source[index][feature]
        pieces.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
    return separator.join(pieces)
