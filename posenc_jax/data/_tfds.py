"""The base of this package's TFDS builders: array_record files, no TensorFlow needed."""

import inspect

import tensorflow_datasets as tfds
from etils import epath


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
