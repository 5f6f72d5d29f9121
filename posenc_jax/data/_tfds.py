"""The base of this package's TFDS builders: array_record files, no TensorFlow needed."""

import inspect
import logging

import tensorflow_datasets as tfds
from etils import epath


class _DropCustomConfigNotice(logging.Filter):
    """Drops TFDS's warning for a builder config not listed in ``BUILDER_CONFIGS``.

    Every evaluation set and corpus here is such a config by design (one per task, length
    and seed, or per file), and a study would print the notice four times per cell.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Using custom data configuration")


# TFDS logs through absl, whose Python logger is "absl".
logging.getLogger("absl").addFilter(_DropCustomConfigNotice())


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A GeneratorBasedBuilder that writes array_record files unless told otherwise.

    array_record is the format ``tfds.data_source`` reads by random access without
    TensorFlow. The builder's source file is located with ``inspect`` because TFDS 4.9's
    own lookup needs the ``importlib_resources`` backport, which it does not install on
    Python >= 3.9 (tensorflow/datasets#11212).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        return epath.Path(inspect.getfile(cls))
