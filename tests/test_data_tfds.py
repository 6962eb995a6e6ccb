"""TFDS sources, offline: tfds.testing.mock_data with the real feature specs of the named data sets.

The feature specs come from the builder code shipped in tensorflow-datasets (no download, no
TensorFlow). Hand-written examples are serialised and deserialised through those features, as
ArrayRecord files would be, and TFDS's own ReadInstruction resolves split slices.
"""

import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from mgpt.config import DataConfig
from mgpt.data import DataError, build_datasets
from mgpt.tasks import get_task

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "</s>", "good", "bad", "film", "eu", "rejects", "german", "call"]


def word_tokenizer():
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2),
                                                                                                 ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>",
                                   cls_token="[CLS]", sep_token="[SEP]")


def served(splits):
    """A mock_data ``as_data_source_fn`` serving ``splits`` ({tfds split: [example, ...]})."""
    def as_data_source(builder, split, decoders=None, **kwargs):
        features = builder.info.features
        infos = {name: tfds.core.SplitInfo(name=name, shard_lengths=[len(rows)], num_bytes=0)
                 for name, rows in splits.items()}
        rows = []
        for part in tfds.core.ReadInstruction.from_spec(split).to_absolute(infos):
            rows += splits[part.splitname][part.from_:part.to]
        # Through the real features and back, as a prepared ArrayRecord file would give them.
        return [features.deserialize_example_np(features.serialize_example(features.encode_example(r)))
                for r in rows]
    return tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=as_data_source)


def sst2_row(i, text, label):
    return {"idx": i, "sentence": text, "label": label}


def test_glue_sst2_slices_and_class_label_names():
    train = [sst2_row(i, t, l) for i, (t, l) in enumerate(
        [("good film", "positive"), ("bad film", "negative"), ("good", "positive"), ("bad", "negative"),
         ("film", "positive")])]
    cfg = DataConfig(format="tfds", tfds_name="glue/sst2", text_column="sentence", max_length=5,
                     tfds_splits={"train": "train[:60%]", "validation": "train[60%:]", "predict": "test"})
    with served({"train": train, "test": [sst2_row(0, "good", -1)]}):
        bundle = build_datasets(cfg, get_task("sequence_classification"), word_tokenizer())
    # ClassLabel ids come back as their names; the label order is the feature's.
    assert bundle.label_names == ("negative", "positive")
    assert bundle.examples["train"] == [{"text": "good film", "label": "positive"},
                                        {"text": "bad film", "label": "negative"},
                                        {"text": "good", "label": "positive"}]
    assert bundle.examples["validation"] == [{"text": "bad", "label": "negative"},
                                             {"text": "film", "label": "positive"}]
    assert bundle.files["validation"] == "tfds:glue/sst2[train[60%:]]"
    np.testing.assert_array_equal(bundle.splits["train"]["labels"], [1, 0, 1])
    np.testing.assert_array_equal(bundle.splits["train"]["input_ids"][0], [2, 5, 7, 3, 0])
    # GLUE's hidden test labels (-1) are no label: fine to predict on, not to evaluate on.
    assert bundle.examples["predict"] == [{"text": "good"}]
    cfg_test = DataConfig(format="tfds", tfds_name="glue/sst2", text_column="sentence",
                          tfds_splits={"train": "train", "test": "test"})
    with served({"train": train, "test": [sst2_row(0, "good", -1)]}):
        with pytest.raises(DataError, match=r"tfds:glue/sst2\[test\] example 0: no label in field 'label'"):
            build_datasets(cfg_test, get_task("sequence_classification"), word_tokenizer())


def test_conll2003_tokens_and_ner_tags():
    sentence = {"tokens": ["EU", "rejects", "German", "call"], "ner": ["B-ORG", "O", "B-MISC", "O"],
                "pos": ["NNP", "VBZ", "JJ", "NN"], "chunks": ["B-NP", "B-VP", "B-NP", "I-NP"]}
    cfg = DataConfig(format="tfds", tfds_name="conll2003", text_column="tokens", label_column="ner",
                     tfds_splits={"train": "train"}, max_length=8)
    with served({"train": [sentence]}):
        bundle = build_datasets(cfg, get_task("token_classification"), word_tokenizer())
    assert bundle.examples["train"] == [{"tokens": ["EU", "rejects", "German", "call"],
                                         "tags": ["B-ORG", "O", "B-MISC", "O"]}]
    # The ClassLabel's nine tags, in its order, even those absent from this slice.
    assert bundle.label_names == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
    np.testing.assert_array_equal(bundle.splits["train"]["labels"][0], [-100, 3, 0, 7, 0, -100, -100, -100])
    np.testing.assert_array_equal(bundle.word_index["train"], [[1, 2, 3, 4]])


def test_cnn_dailymail_prompt_template():
    article = {"article": "EU rejects German call .", "highlights": "EU rejects call", "id": "a1",
               "publisher": "cnn"}
    cfg = DataConfig(format="tfds", tfds_name="cnn_dailymail", tfds_splits={"train": "train", "test": "test"},
                     prompt_template="Article: {article}\nSummary:", target_column="highlights")
    with served({"train": [article], "test": [dict(article, id="a2")]}):
        bundle = build_datasets(cfg, get_task("causal_lm"), word_tokenizer())
    assert bundle.examples["train"] == [{"text": "Article: EU rejects German call .\nSummary:",
                                         "text_pair": "EU rejects call"}]
    assert sorted(bundle.splits) == ["test", "train"]


def test_wmt14_translation_pairs():
    pair = {"de": "Die EU lehnt ab", "en": "the EU rejects"}
    cfg = DataConfig(format="tfds", tfds_name="wmt14_translate/de-en", tfds_splits={"train": "train[:1]"},
                     prompt_template="German: {de}\nEnglish:", target_column="en")
    with served({"train": [pair, {"de": "x", "en": "y"}]}):
        bundle = build_datasets(cfg, get_task("causal_lm"), word_tokenizer())
    assert bundle.examples["train"] == [{"text": "German: Die EU lehnt ab\nEnglish:", "text_pair": "the EU rejects"}]


def test_random_mock_examples_decode_to_text_and_label_names():
    cfg = DataConfig(format="tfds", tfds_name="glue/sst2", text_column="sentence", tfds_splits={"train": "train"})
    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        bundle = build_datasets(cfg, get_task("sequence_classification"), word_tokenizer())
    examples = bundle.examples["train"]
    assert len(examples) == 4
    assert all(isinstance(e["text"], str) and e["label"] in ("negative", "positive") for e in examples)


def test_unknown_data_set_and_missing_feature_fail_clearly():
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE):
        with pytest.raises(DataError, match="data.tfds_name 'no_such_set': TFDS has no such data set"):
            build_datasets(DataConfig(format="tfds", tfds_name="no_such_set", tfds_splits={"train": "train"}),
                           get_task("sequence_classification"), word_tokenizer())
    with served({"train": [sst2_row(0, "good", "positive")]}):
        with pytest.raises(DataError, match=r"missing field 'text' \(for text\).*'sentence'"):
            build_datasets(DataConfig(format="tfds", tfds_name="glue/sst2", tfds_splits={"train": "train"}),
                           get_task("sequence_classification"), word_tokenizer())


def test_mgpt_does_not_import_tfds_at_import_time():
    code = "import sys, mgpt, mgpt.config, mgpt.data, mgpt.tasks; print('tensorflow_datasets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_tfrecord_data_without_tensorflow_says_what_to_do(monkeypatch):
    def tfrecord_only(builder, split, **kwargs):
        raise NotImplementedError("Random access data source for file format tfrecord is not supported")

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # as on a machine without TensorFlow
    cfg = DataConfig(format="tfds", tfds_name="glue/sst2", text_column="sentence", tfds_splits={"train": "train"})
    with tfds.testing.mock_data(policy=tfds.testing.MockPolicy.USE_CODE, as_data_source_fn=tfrecord_only):
        with pytest.raises(DataError, match=r"prepared as TFRecord files .*pip install tensorflow-cpu.*"
                                            r"tfds build glue/sst2 --file_format=array_record"):
            build_datasets(cfg, get_task("sequence_classification"), word_tokenizer())
