"""Training-time augmentation (mgpt.data.augment): each op on hand-made inputs, spec checking, and training
with augmented batches that stay a pure function of (seed, step): resumed runs are bitwise equal."""

import collections
import os
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mgpt import config as config_lib
from mgpt import parallel
from mgpt.config import ConfigError
from mgpt.data import augment, lengths
from mgpt.data.augment import Op, augment_example, example_rng
from mgpt.train import loop, reporting, setup
from mgpt.train.validate import validate

from fixtures_tiny import ENTITY_WORDS, FILLER, ner_conll, tiny_bert, tiny_gpt2, write_classification_experiment

TEXT = "the quick brown fox jumps over the lazy dog while seven wizards quietly hex jolly kings"


def _ops(*specs, **kwargs):
    return augment.parse_ops(specs, **kwargs)


def _valid_bio(tags):
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return False
        previous = tag
    return True


def _entity_types(tags):
    return [kind for _, _, kind in augment.mention_spans(tags)]


# ------------------------------------------------------------------------------------------- the ops themselves


def test_same_seed_step_and_index_give_the_same_example_and_others_differ():
    ops = _ops("swap:0.2", "delete:0.1", "insert:0.1", "char:0.1")
    example = {"text": TEXT, "text_pair": TEXT.upper(), "label": "pos"}
    first = augment_example(example, ops, example_rng(3, 7, 11))
    assert first == augment_example(example, ops, example_rng(3, 7, 11))
    assert first["label"] == "pos" and first["text"] != TEXT and first["text_pair"] != TEXT.upper()
    others = [augment_example(example, ops, example_rng(*key)) for key in ((3, 8, 11), (3, 7, 12), (4, 7, 11))]
    assert all(other != first for other in others)
    assert example == {"text": TEXT, "text_pair": TEXT.upper(), "label": "pos"}  # never mutated


def test_char_noise_rate_and_keyboard_neighbours():
    rng = np.random.default_rng(0)
    edits = eligible = 0
    for _ in range(400):
        text = " ".join(random.Random(int(rng.integers(1 << 30))).sample(FILLER, 4))
        noisy, count = augment.char_noise(text, 0.1, rng)
        assert (noisy != text) or count == 0
        edits += count
        eligible += sum(c.isalnum() for c in text)
    assert abs(edits / eligible - 0.1) < 0.015, edits / eligible
    assert set(augment.KEYBOARD_NEIGHBOURS["g"]) == set("fhtyvb")
    assert set(augment.KEYBOARD_NEIGHBOURS["q"]) == set("12wa")
    # One letter at rate 1: a neighbour (substitution), the letter plus a neighbour (insertion), or unchanged
    # (a deletion would leave nothing, and a text never becomes empty).
    outcomes = collections.Counter()
    for seed in range(300):
        noisy, _ = augment.char_noise("G", 1.0, np.random.default_rng(seed))
        if len(noisy) == 1 and noisy != "G":
            assert noisy.lower() in augment.KEYBOARD_NEIGHBOURS["g"] and noisy.isupper()
            outcomes["substitution"] += 1
        elif len(noisy) == 2:
            assert noisy[0] == "G" and noisy[1].lower() in augment.KEYBOARD_NEIGHBOURS["g"]
            outcomes["insertion"] += 1
        else:
            assert noisy == "G"
            outcomes["unchanged"] += 1
    assert min(outcomes.values()) > 30 and len(outcomes) == 3
    pairs = {augment.char_noise("ab", 1.0, np.random.default_rng(seed))[0] for seed in range(200)}
    assert "ba" in pairs  # transposition with the next character


def test_swap_keeps_words_delete_never_empties_and_rates_hold():
    words = TEXT.split()
    changed = 0
    for index in range(200):
        out = augment_example({"text": TEXT}, _ops("swap:0.2"), example_rng(0, 0, index))["text"].split()
        assert sorted(out) == sorted(words)
        changed += out != words
    assert changed > 150
    kept = []
    for index in range(300):
        out = augment_example({"text": TEXT}, _ops("delete:0.2"), example_rng(0, 0, index))["text"].split()
        assert out and collections.Counter(out) <= collections.Counter(words)
        kept.append(len(out))
    assert abs(1 - np.mean(kept) / len(words) - 0.2) < 0.03
    for index in range(50):  # deleting every word keeps one
        out = augment_example({"text": TEXT}, _ops("delete:1"), example_rng(0, 0, index))["text"].split()
        assert len(out) == 1 and out[0] in words
    assert augment_example({"text": "alone"}, _ops("delete:1", "swap:1"), example_rng(0, 0, 0))["text"] == "alone"
    grown = []
    for index in range(200):
        out = augment_example({"text": TEXT}, _ops("insert:0.2"), example_rng(0, 0, index))["text"].split()
        assert set(out) <= set(words)  # without a synonyms file: copies of the text's own words
        grown.append(len(out) - len(words))
    assert abs(np.mean(grown) / len(words) - 0.2) < 0.03


def test_synonyms_come_from_the_same_group(tmp_path):
    path = tmp_path / "synonyms.txt"
    path.write_text("# groups\ngood, great, fine\nbad awful poor\n\nmovie film\n")
    pools = augment.build_pools(synonyms_file=str(path))
    groups = [{"good", "great", "fine"}, {"bad", "awful", "poor"}, {"movie", "film"}]
    assert set(pools.synonyms["good"]) == {"great", "fine"} and set(pools.synonyms["film"]) == {"movie"}
    text = "Good movie, bad plot"
    seen = set()
    for index in range(100):
        out = augment_example({"text": text}, _ops("synonym:0.7", synonyms_file=str(path)), example_rng(0, 0, index),
                              pools)["text"].split()
        assert out[3] == "plot" and out[1].endswith(",") and out[0][0].isupper()
        for original, new in zip(["good", "movie", "bad"], [out[0].lower(), out[1].rstrip(","), out[2]]):
            assert new == original or any({original, new} <= group for group in groups)
        seen.update(out)
    assert {"Great", "Fine", "film,", "awful", "poor"} <= seen
    for index in range(50):
        out = augment_example({"text": text}, _ops("insert:0.5", synonyms_file=str(path)), example_rng(0, 0, index),
                              pools)["text"].split()
        assert set(out) - set(text.split()) <= set().union(*groups)  # synonyms (of inserted ones too)
    with pytest.raises(Exception, match="synonyms file not found"):
        augment.build_pools(synonyms_file=str(tmp_path / "missing.txt"))


def _tagged_sentences(count, seed=0):
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        tokens, tags = [], []
        for _ in range(rng.randint(2, 7)):
            if rng.random() < 0.4:
                kind = rng.choice(sorted(ENTITY_WORDS))
                words = [rng.choice(ENTITY_WORDS[kind]) for _ in range(rng.randint(1, 3))]
                tokens += words
                tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
            else:
                tokens.append(rng.choice(FILLER))
                tags.append("O")
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


def test_token_classification_ops_keep_tags_aligned():
    train = _tagged_sentences(40, seed=1)
    pools = augment.build_pools(train)
    by_tag = {tag: set(tokens) for tag, tokens in pools.tag_tokens.items()}
    changed = collections.Counter()
    for index, sentence in enumerate(_tagged_sentences(100, seed=2)):
        for spec in ("label_replace:0.5", "mention_replace:1", "segment_shuffle:1", "char:0.3"):
            out = augment_example(sentence, _ops(spec, label_kind="tags"), example_rng(0, 0, index), pools)
            assert len(out["tokens"]) == len(out["tags"]) and _valid_bio(out["tags"])
            assert all(out["tokens"])  # char noise never empties a word
            assert _entity_types(out["tags"]) == _entity_types(sentence["tags"])
            if spec != "mention_replace:1":
                assert out["tags"] == sentence["tags"]
            if spec == "label_replace:0.5":
                for old, new, tag in zip(sentence["tokens"], out["tokens"], out["tags"]):
                    assert new == old or new in by_tag[tag]
            if spec == "segment_shuffle:1":
                for start, end, _ in augment.mention_spans(sentence["tags"]):
                    assert sorted(out["tokens"][start:end]) == sorted(sentence["tokens"][start:end])
                assert sorted(out["tokens"]) == sorted(sentence["tokens"])
            if spec == "mention_replace:1":
                for start, end, kind in augment.mention_spans(out["tags"]):
                    assert tuple(out["tokens"][start:end]) in pools.mentions[kind]
            changed[spec] += out != sentence
    assert all(changed[spec] > 30 for spec in changed), changed
    assert any(len(augment_example(s, _ops("mention_replace:1"), example_rng(0, 0, i), pools)["tokens"]) != len(s["tokens"])
               for i, s in enumerate(_tagged_sentences(30, seed=3)))


def test_bad_specs_fail_naming_the_key_and_the_entry():
    cases = [("frobnicate:0.1", "unknown op 'frobnicate'"), ("char:0", r"not in \(0, 1\]"),
             ("char:1.5", r"not in \(0, 1\]"), ("char", "expected 'op:rate'"), ("char:x", "not a number"),
             ("synonym:0.1", "needs data.synonyms_file")]
    for entry, problem in cases:
        with pytest.raises(ConfigError, match=f"data.augment entry .{entry}.: .*{problem}"):
            augment.parse_ops([entry])
    with pytest.raises(ConfigError, match="data.augment entry 'swap:0.1': swap moves words"):
        augment.parse_ops(["swap:0.1"], label_kind="tags")
    with pytest.raises(ConfigError, match="data.augment entry 'mention_replace:0.1': .*needs word tags"):
        augment.parse_ops(["mention_replace:0.1"], label_kind="string")
    with pytest.raises(ConfigError, match="train.eval_perturbations entry 'token_cutoff:0.1'"):
        augment.parse_ops(["token_cutoff:0.1"], key="train.eval_perturbations")
    # Embedding ops are valid for every task and handed to the train step separately.
    assert augment.text_ops(["token_cutoff:0.1", "char:0.05", "span_cutoff:0.2"], label_kind="tags") == (
        Op("char", 0.05),)
    assert augment.embedding_ops(["token_cutoff:0.1", "char:0.05", "span_cutoff:0.2"]) == {
        "token_cutoff": 0.1, "span_cutoff": 0.2}


def test_validate_checks_augmentation_before_any_io():
    base = config_lib.ExperimentConfig(data=config_lib.DataConfig(train_file="missing.csv", validation_file="v.csv"))

    def with_(**data):
        return config_lib.apply_overrides(base, [f"{k}={v}" for k, v in data.items()])
    with pytest.raises(ConfigError, match="data.augment entry 'bogus:0.1'"):
        validate(with_(**{"data.augment": "('bogus:0.1',)"}))
    with pytest.raises(ConfigError, match="train.eval_perturbations entry 'char:2'"):
        validate(with_(**{"train.eval_perturbations": "('char:2',)"}))
    with pytest.raises(ConfigError, match="data.pack=True: data.augment re-encodes"):
        validate(with_(**{"data.augment": "('char:0.1',)", "data.pack": "true"}))
    with pytest.raises(ConfigError, match="label_replace needs word tags"):
        validate(with_(**{"data.augment": "('label_replace:0.1',)"}))
    validate(with_(**{"data.augment": "('token_cutoff:0.1',)", "data.pack": "true"}))  # embedding ops: fine
    with pytest.raises(ConfigError, match=r"data.augment_probability=0.5: .* has none; expected 1.0"):
        validate(with_(**{"data.augment": "('token_cutoff:0.1',)", "data.augment_probability": "0.5"}))
    with pytest.raises(ConfigError, match="data.augment_probability"):
        validate(with_(**{"data.augment": "('char:0.1',)", "data.augment_probability": "0"}))


# ------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    directory = tmp_path_factory.mktemp("augment")
    return write_classification_experiment(str(directory), tiny_gpt2(directory / "model"))


AUGMENT = "data.augment=('swap:0.3','delete:0.2','char:0.1')"


def _config(experiment, *overrides):
    return config_lib.apply_overrides(config_lib.load_experiment(experiment), list(overrides))


def test_augmented_batches_are_pure_bucketed_and_split_across_processes(experiment):
    plain = setup.build_run(_config(experiment, "data.group_by_length=true"))
    run = setup.build_run(_config(experiment, AUGMENT, "data.group_by_length=true"))
    clean, augmented = plain.batches("train", 8, shuffle=True), run.batches("train", 8, shuffle=True)
    ladder = lengths.bucket_ladder(run.config.data.max_length)
    again = setup.build_run(_config(experiment, AUGMENT, "data.group_by_length=true")).batches("train", 8, True)
    for step in (0, 5, 13):  # 6 steps per epoch, the last one short
        a, b = clean.batch_at(step), augmented.batch_at(step)
        np.testing.assert_array_equal(a["labels"], b["labels"])  # same examples, same order (original lengths)
        np.testing.assert_array_equal(a["example_weight"], b["example_weight"])
        assert not np.array_equal(a["input_ids"], b["input_ids"]) or a["input_ids"].shape != b["input_ids"].shape
        width = b["input_ids"].shape[1]
        assert width == lengths.bucket_for(int(b["attention_mask"].sum(1).max()), ladder)
        for key, value in again.batch_at(step).items():  # a fresh run: the same batch
            np.testing.assert_array_equal(value, b[key])
        halves = [augmented.batch_at(step, index, 2) for index in (0, 1)]
        for key in b:
            np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), b[key])
    assert run.augmenter.examples_at([0], 1) != run.augmenter.examples_at([0], 7)  # each step augments afresh


def test_augment_probability_keeps_the_other_examples_as_they_are(experiment):
    """data.augment_probability=p: about p of the examples of a step are augmented, exactly as at p=1 (the same
    draws), the rest left as they are; which ones is a pure function of (seed, step, example)."""
    always = setup.build_run(_config(experiment, AUGMENT)).augmenter
    half = setup.build_run(_config(experiment, AUGMENT, "data.augment_probability=0.5")).augmenter
    indices = np.arange(len(half.examples))
    chosen = []
    for step in range(6):
        ours, full = half.examples_at(indices, step), always.examples_at(indices, step)
        assert ours == half.examples_at(indices, step)  # pure
        for i, (mine, augmented, original) in enumerate(zip(ours, full, half.examples)):
            picked = augment.augmented_at(half.seed, step, i, 0.5)
            assert mine == (augmented if picked else original)
            chosen.append(picked)
    assert 0.4 < np.mean(chosen) < 0.6, np.mean(chosen)  # 6 steps x the training examples
    assert all(augment.augmented_at(3, step, 5, 1.0) for step in range(20))


def test_augment_probability_is_part_of_the_resume_fingerprint_only_when_set(experiment):
    from mgpt.train.fingerprint import run_fingerprint

    def data_part(*overrides):
        config = _config(experiment, *overrides)
        return run_fingerprint(config, ["neg", "pos"], {"w": np.zeros(2, np.float32)}, {})["data"]

    assert "augment_probability" not in data_part(AUGMENT)  # checkpoints written before it existed still resume
    assert data_part(AUGMENT, "data.augment_probability=0.5")["augment_probability"] == 0.5


def test_token_classification_batches_keep_one_label_per_word(tmp_path):
    model = tiny_bert(tmp_path / "bert")
    files = {s: ner_conll(tmp_path / f"{s}.conll", n, i) for i, (s, n) in enumerate((("train", 16), ("validation", 4)))}
    config = config_lib.ExperimentConfig(
        model=config_lib.ModelConfig(name_or_path=model),
        data=config_lib.DataConfig(format="conll", train_file=files["train"], validation_file=files["validation"],
                                   max_length=16, augment=("mention_replace:1", "label_replace:0.5", "char:0.2")),
        task=config_lib.TaskConfig(kind="token_classification"))
    run = setup.build_run(validate(config))
    batches = run.batches("train", 4, shuffle=True)
    examples = run.augmenter.examples_at(batches.indices_at(2), 2)
    batch = batches.batch_at(2)
    assert [int((row != -100).sum()) for row in batch["labels"]] == [len(e["tokens"]) for e in examples]
    names = run.data.label_names
    for row, example in zip(batch["labels"], examples):
        assert [names[i] for i in row[row != -100]] == example["tags"]


def _params(workdir, run):
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(run.mesh)), run.params)
    from mgpt.train.checkpoint import restore_params

    return restore_params(os.path.join(workdir, "checkpoints"), target)[0]


def test_augmented_run_resumes_bitwise(experiment, tmp_path):
    short = ["train.max_steps=6", "train.eval_splits=()", "train.final_eval_splits=()", "checkpoint.keep_best=false"]
    config = _config(experiment, AUGMENT, *short)
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    loop.train(config, straight)
    assert loop.train(config, resumed, stop_after=3) == {}
    loop.train(config, resumed)
    run = setup.build_run(config)
    a, b = _params(straight, run), _params(resumed, run)
    assert all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    seen = {name: [(e["step"], e["batch_fingerprint"]) for e in reporting.read_metrics(workdir) if e["kind"] == "train"]
            for name, workdir in (("straight", straight), ("resumed", resumed))}
    assert seen["straight"] == seen["resumed"] and [s for s, _ in seen["resumed"]] == [1, 2, 3, 4, 5, 6]
    # What was trained on is the augmented batches, not the plain ones.
    plain = setup.build_run(_config(experiment, *short)).batches("train", 8, shuffle=True)
    augmented = run.batches("train", 8, shuffle=True)
    for step, fingerprint in seen["straight"]:
        assert fingerprint == loop.batch_fingerprint(augmented.batch_at(step - 1))
        assert fingerprint != loop.batch_fingerprint(plain.batch_at(step - 1))
