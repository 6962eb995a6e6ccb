"""TensorFlow Datasets as a source: a data set by name, split slicing, features decoded to text.

``data.tfds_name`` names the data set (``"glue/sst2"``), ``data.tfds_splits`` maps mgpt's split
names to TFDS split strings (``{"train": "train[:90%]", "validation": "train[90%:]"}``) and the
data config's column names name TFDS features. ClassLabel values become their label names
(``int2str``), bytes become str, so TFDS examples look like rows of a file.

TFDS is imported only here, when a config asks for it. Nothing is downloaded: the data set must
already be prepared (``tfds build NAME``). Reading uses TFDS's random-access numpy path
(``builder.as_data_source``, what ``tfds.data_source(..., download=False)`` does; ArrayRecord
files, no TensorFlow needed). A data set prepared as TFRecord files is read with
``tfds.as_numpy(builder.as_dataset(...))`` (what ``tfds.load(..., download=False)`` does), which
needs TensorFlow.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Iterable

import numpy as np

from mgpt.data.errors import DataError
from mgpt.data.records import Records

logger = logging.getLogger("mgpt")

SPLITS = ("train", "validation", "test", "predict")
# Without TensorFlow, `import tensorflow_datasets` registers no data set until its category
# package is imported; these hold the text data sets.
_CATEGORIES = ("text", "summarization", "translate", "question_answering", "structured", "text_simplification")


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise DataError("data.format='tfds' needs tensorflow-datasets: pip install tensorflow-datasets") from None
    for category in _CATEGORIES:
        try:
            importlib.import_module(f"tensorflow_datasets.{category}")
        except ImportError:  # a trimmed TFDS build may lack a category
            pass
    return tfds


def load_builder(name: str, data_dir: str = ""):
    """The TFDS builder of ``name`` (e.g. ``"glue/sst2"``); its ``info.features`` is the real spec."""
    tfds = _import_tfds()
    from tensorflow_datasets.core.registered import DatasetNotFoundError

    try:
        return tfds.builder(name, data_dir=data_dir or None)
    except DatasetNotFoundError as e:
        first = str(e).strip().splitlines()[0]
        raise DataError(f"data.tfds_name {name!r}: TFDS has no such data set ({first})") from None


def decode_value(feature, value: Any) -> Any:
    """A TFDS numpy value -> plain python: ClassLabel -> its name (None for -1, "no label"),
    bytes -> str, arrays -> lists, nested features recursively."""
    from tensorflow_datasets.core import features as F

    if isinstance(feature, F.ClassLabel):
        if np.ndim(value):
            return [decode_value(feature, v) for v in value]
        index = int(value)
        return None if index < 0 else feature.int2str(index)
    if isinstance(feature, F.Sequence):
        inner = feature.feature
        if isinstance(value, dict):  # a sequence of dicts comes as a dict of sequences
            return {key: [decode_value(inner[key], v) for v in values] for key, values in value.items()}
        return [decode_value(inner, v) for v in value]
    if isinstance(feature, F.FeaturesDict):  # also Translation: {"de": ..., "en": ...}
        return {key: decode_value(feature[key], v) for key, v in value.items()}
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _plain(value.item()) if value.ndim == 0 else [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def label_names_of(features, label_column: str) -> tuple[str, ...]:
    """The names of a ClassLabel (or sequence of ClassLabel) feature; () for anything else."""
    from tensorflow_datasets.core import features as F

    if not hasattr(features, "keys") or label_column not in features.keys():
        return ()
    feature = features[label_column]
    while isinstance(feature, F.Sequence):
        feature = feature.feature
    return tuple(feature.names) if isinstance(feature, F.ClassLabel) else ()


def _rows(builder, split: str, name: str) -> Iterable[dict]:
    """Raw numpy examples of one TFDS split, in order."""
    try:
        source = builder.as_data_source(split=split)
    except NotImplementedError:  # prepared as TFRecord: only the tf.data reader can read it
        return _rows_with_tensorflow(builder, split, name)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise DataError(
            f"data.tfds_name {name!r}, split {split!r}: cannot read it from {builder.data_dir} ({e}); "
            f"is it prepared there? (tfds build {name} --file_format=array_record)"
        ) from None
    return _records_of(source)


def _records_of(source) -> Iterable[dict]:
    # One record at a time: the random-access interface every TFDS data source (and its mock) has.
    return (source[i] for i in range(len(source)))


def _rows_with_tensorflow(builder, split: str, name: str) -> Iterable[dict]:
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        raise DataError(
            f"data.tfds_name {name!r} is prepared as TFRecord files in {builder.data_dir}; reading those needs "
            f"TensorFlow (pip install tensorflow-cpu), or prepare it again as ArrayRecord: "
            f"tfds build {name} --file_format=array_record"
        ) from None
    import tensorflow_datasets as tfds

    return tfds.as_numpy(builder.as_dataset(split=split, shuffle_files=False))


def split_map(data_cfg, builder) -> dict[str, str]:
    """mgpt split -> TFDS split: ``data.tfds_splits``, else those of train / validation / test
    the data set has."""
    mapping = dict(data_cfg.tfds_splits)
    unknown = sorted(set(mapping) - set(SPLITS))
    if unknown:
        raise DataError(f"data.tfds_splits: unknown split name(s) {unknown}; mgpt's splits are {list(SPLITS)}")
    if not mapping:
        available = set(builder.info.splits)
        mapping = {split: split for split in SPLITS[:3] if split in available}
        if not mapping:
            raise DataError(
                f"data.tfds_name {data_cfg.tfds_name!r}: no prepared train/validation/test split found in "
                f"{builder.data_dir}; name them in data.tfds_splits, e.g. {{'train': 'train[:90%]'}}"
            )
    return {split: str(tfds_split) for split, tfds_split in mapping.items()}


def read_tfds(data_cfg) -> tuple[dict[str, Records], dict[str, str], tuple[str, ...]]:
    """Records of every mapped split, where each came from, and the label feature's names.

    Returns ``(records, sources, label_names)``: ``records[split]`` holds ``[(where, record), ...]``
    with every feature decoded (see :func:`decode_value`); ``sources[split]`` reads like
    ``tfds:glue/sst2[train[:90%]]``; ``label_names`` are the ClassLabel names of
    ``data.label_column`` (empty when it is not a ClassLabel).
    """
    name = data_cfg.tfds_name
    if not name:
        raise DataError("data.format='tfds' needs data.tfds_name, e.g. 'glue/sst2'")
    builder = load_builder(name, data_cfg.tfds_data_dir)
    features = builder.info.features
    records, places = {}, {}
    for split, tfds_split in split_map(data_cfg, builder).items():
        source = f"tfds:{name}[{tfds_split}]"
        rows = [
            (f"{source} example {i}", decode_value(features, row))
            for i, row in enumerate(_rows(builder, tfds_split, name))
        ]
        if not rows:
            raise DataError(f"{source}: no examples")
        records[split], places[split] = Records(source, rows), source
        logger.info("%s: %d examples", source, len(rows))
    return records, places, label_names_of(features, data_cfg.label_column)
