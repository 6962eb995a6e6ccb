"""Chat-format data (data.format="chat"): conversations rendered with the tokenizer's chat template, the
loss on the assistant turns only; generation continues the rendered prompt; `mgpt generate` takes messages.

The reference is transformers' own `apply_chat_template` on a tiny word-level tokenizer with a
ChatML template (SmolLM2's layout: `<|im_start|>role\\ncontent<|im_end|>\\n`)."""

import json
import logging

import numpy as np
import pytest

from mgpt import cli
from mgpt.config import ConfigError, DataConfig, ExperimentConfig, TaskConfig
from mgpt.constants import IGNORE_INDEX
from mgpt.data import DataError, chat, cleaning, reading
from mgpt.tasks import get_task
from mgpt.train import reporting
from mgpt.train.validate import validate

CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
WORDS = ["be", "brief", "hello", "hi", "there", "bye", "see", "you", "what", "colour", "is", "the", "sky", "grass",
         "blue", "green", "sun", "yellow", "thanks", "welcome"]
VOCAB = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>", "\n", "system", "user", "assistant"] + WORDS
IM_START, IM_END, NL = 2, 3, 4
ANSWERS = {"sky": "blue", "grass": "green", "sun": "yellow"}


def chat_tokenizer(directory=None, template=CHATML):
    """A word-level fast tokenizer that keeps newlines as tokens, with ChatML special tokens and template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(" ", "removed"),
                                                 pre_tokenizers.Split("\n", "isolated")])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>",
                                   bos_token="<|im_start|>", additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = template
    if directory is not None:
        fast.save_pretrained(directory)
    return fast


def tiny_chat_gpt2(directory):
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(VOCAB), n_positions=64, n_embd=32, n_layer=2, n_head=4,
                        bos_token_id=IM_START, eos_token_id=IM_END, pad_token_id=0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    chat_tokenizer(directory)
    return str(directory)


def msg(role, content):
    return {"role": role, "content": content}


TWO_TURNS = [msg("system", "be brief"), msg("user", "hello"), msg("assistant", "hi there"), msg("user", "bye"),
             msg("assistant", "see you")]


def qa(thing):
    return [msg("user", f"what colour is the {thing}"), msg("assistant", ANSWERS[thing]), msg("user", "thanks"),
            msg("assistant", "welcome")]


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _config(path, **data):
    return DataConfig(**dict(dict(format="chat", train_file=path, max_length=32), **data))


def test_rendered_ids_equal_apply_chat_template_and_the_mask_covers_the_assistant_turns():
    tokenizer = chat_tokenizer()
    ids, labels = chat.conversation_ids(tokenizer, TWO_TURNS)
    assert ids == tokenizer.apply_chat_template(TWO_TURNS, tokenize=True, return_dict=False)
    # <s>system\nbe brief</s>\n <s>user\nhello</s>\n <s>assistant\nhi there</s>\n <s>user\nbye</s>\n
    # <s>assistant\nsee you</s>\n : each assistant span is its content, </s> and the newline after it
    assert ids[13:16] == [IM_START, VOCAB.index("assistant"), NL]
    scored = [i for i, label in enumerate(labels) if label != IGNORE_INDEX]
    assert scored == [16, 17, 18, 19, 29, 30, 31, 32]
    assert len(ids) == 33
    assert [labels[i] for i in scored] == [ids[i] for i in scored]
    assert [VOCAB[ids[i]] for i in scored] == ["hi", "there", "<|im_end|>", "\n", "see", "you", "<|im_end|>", "\n"]


def test_generation_prompt_is_the_template_before_the_last_assistant_message():
    tokenizer = chat_tokenizer()
    expected = tokenizer.apply_chat_template(TWO_TURNS[:-1], tokenize=True, return_dict=False,
                                             add_generation_prompt=True)
    assert chat.generation_prompt(tokenizer, TWO_TURNS) == expected
    assert expected[-3:] == [IM_START, VOCAB.index("assistant"), NL]
    assert chat.reference(TWO_TURNS) == "see you"


def test_reader_and_encoding_through_the_data_path(tmp_path, caplog):
    tokenizer = chat_tokenizer()
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": TWO_TURNS, "id": 1}, {"messages": qa("sky")}])
    data_cfg = _config(path, max_length=28)
    examples = reading.read_examples(path, data_cfg, "none", task_name="causal_lm")
    assert examples[0] == {"messages": TWO_TURNS, "where": f"{path}:1"}
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        encoded = get_task("generation").encode(examples, tokenizer, data_cfg, {}, split="train", where="train")
    assert "1 of 2 examples in train are longer than max_length=28 tokens and were truncated" in caplog.text
    full, labels = chat.conversation_ids(tokenizer, TWO_TURNS)
    np.testing.assert_array_equal(encoded.arrays["input_ids"][0], full[:28])
    np.testing.assert_array_equal(encoded.arrays["labels"][0], labels[:28])
    second, second_labels = chat.conversation_ids(tokenizer, qa("sky"))
    assert len(second) == 28 and encoded.arrays["attention_mask"][1].sum() == 28
    np.testing.assert_array_equal(encoded.arrays["labels"][1], second_labels)
    assert encoded.prompt_ids == [chat.generation_prompt(tokenizer, TWO_TURNS), chat.generation_prompt(tokenizer, qa("sky"))]
    # a custom messages column
    other = write_jsonl(tmp_path / "conv.jsonl", [{"conversation": qa("sun")}])
    rows = reading.read_examples(other, _config(other, messages_column="conversation"), "none")
    assert rows[0]["messages"] == qa("sun")


def test_cleaning_normalises_and_deduplicates_conversations(tmp_path):
    spaced = [msg("user", "  what  colour is\tthe sky "), msg("assistant", "blue")]
    data_cfg = DataConfig(format="chat", normalize_text=True, drop_duplicates=True)
    kept, counts = cleaning.clean_examples([{"messages": spaced}, {"messages": qa("sky")[:2]}], data_cfg)
    assert kept == [{"messages": qa("sky")[:2]}] and counts["duplicate"] == 1


@pytest.mark.parametrize("record,message", [
    ({"text": "hi"}, "missing key 'messages' (data.messages_column: the conversation); the object has keys ['text']"),
    ({"messages": "hi"}, "field 'messages' must be a non-empty list of {'role', 'content'} messages, got 'hi'"),
    ({"messages": [{"role": "user"}]}, "messages[0]: missing key 'content'; a message has 'role' and 'content', "
                                       "it has ['role']"),
    ({"messages": [{"content": "hi"}]}, "messages[0]: missing key 'role'"),
    ({"messages": [msg("user", "hi"), msg("bot", "hi")]}, "messages[1]: unknown role 'bot'; expected one of system, "
                                                          "user, assistant"),
    ({"messages": [msg("user", "hi"), {"role": "assistant", "content": 3}]}, "messages[1]: content must be a string, got 3"),
    ({"messages": [msg("system", "be brief"), msg("user", "hi")]}, "the conversation has no assistant message (roles: "
                                                                   "['system', 'user']); expected at least one"),
])
def test_bad_records_name_file_and_line(tmp_path, record, message):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": qa("sky")}, record])
    with pytest.raises(DataError) as error:
        reading.read_examples(path, _config(path), "none")
    assert str(error.value).startswith(f"{path}:2: ")
    assert message in str(error.value)


def test_a_file_to_predict_on_may_end_without_an_assistant_turn(tmp_path):
    path = write_jsonl(tmp_path / "predict.jsonl", [{"messages": [msg("user", "hello")]}])
    examples = reading.read_examples(path, _config(path), "none", labels_optional=True)
    tokenizer = chat_tokenizer()
    encoded = chat.encode_chat(examples, tokenizer, 32)
    assert (encoded.arrays["labels"] == IGNORE_INDEX).all()
    assert encoded.prompt_ids[0] == tokenizer.apply_chat_template([msg("user", "hello")], tokenize=True,
                                                                   return_dict=False, add_generation_prompt=True)


def test_a_template_that_is_not_prefix_stable_fails_naming_the_line(tmp_path):
    # Ends every rendering without a generation prompt with an extra "bye": the rendering up to the first
    # assistant turn is then no prefix of the whole conversation.
    unstable = chat_tokenizer(template=CHATML.replace("{% endif %}", "{% else %}{{ 'bye' }}{% endif %}"))
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": TWO_TURNS}])
    examples = reading.read_examples(path, _config(path), "none")
    with pytest.raises(DataError, match=rf"^{path}:1: the chat template is not prefix-stable at message 3"):
        chat.encode_chat(examples, unstable, 64)
    no_template = chat_tokenizer(template=None)
    with pytest.raises(DataError, match="this tokenizer has none"):
        chat.encode_chat(examples, no_template, 64)


def test_validate_keeps_chat_to_causal_tasks():
    def check(task, **data):
        return validate(ExperimentConfig(data=DataConfig(format="chat", train_file="x.jsonl", validation_file="y.jsonl",
                                                         **data),
                                         task=TaskConfig(kind=task)))

    check("causal_lm")
    check("generation")  # the reference is the last assistant message: no target_column
    with pytest.raises(ConfigError, match="data.format='chat': task.kind='sequence_classification' reads one of"):
        check("sequence_classification")
    with pytest.raises(ConfigError, match="data.target_column='answer': data.format='chat' renders each"):
        check("generation", target_column="answer")
    with pytest.raises(DataError, match="data.format='chat' is only for causal_lm and generation"):
        reading.check_format(DataConfig(format="chat"), "string", "sequence_classification")


def _experiment(tmp_path, model_dir, files, kind="causal_lm", **train):
    train = dict(dict(batch_size=3, eval_batch_size=3, max_steps=30, log_every=1, progress_bar=False), **train)
    path = tmp_path / "tiny_chat.py"
    path.write_text(f'''"""Tiny chat fine-tuning.

    mgpt train tiny_chat.py
"""
from mgpt.config import *


def get_config():
    return ExperimentConfig(
        name="tiny_chat",
        model=ModelConfig(name_or_path={model_dir!r}, dropout=0.0),
        data=DataConfig(format="chat", max_length=32, **{files!r}),
        task=TaskConfig(kind={kind!r}, generation_metrics=("exact_match",), max_new_tokens=4),
        optimizer=OptimizerConfig(name="adamw", learning_rate=1e-2, schedule="constant"),
        train=TrainConfig(**{train!r}),
        parallel=ParallelConfig(num_devices=1),
        checkpoint=CheckpointConfig(max_to_keep=1, async_save=False),
    )
''')
    return str(path)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    directory = tmp_path_factory.mktemp("chat")
    model_dir = tiny_chat_gpt2(directory / "model")
    conversations = [{"messages": qa(thing)} for thing in ("sky", "grass", "sun")] * 2
    files = {"train_file": write_jsonl(directory / "train.jsonl", conversations),
             "validation_file": write_jsonl(directory / "validation.jsonl", conversations[:3])}
    experiment = _experiment(directory, model_dir, files, kind="generation", eval_every=30)
    workdir = str(directory / "run")
    assert cli.main(["train", experiment, "--workdir", workdir]) == 0
    return experiment, workdir, model_dir


def test_training_on_six_conversations_lowers_the_loss_and_evaluates_by_generating(trained):
    _, workdir, _ = trained
    events = reporting.read_metrics(workdir)
    losses = [e["loss"] for e in events if e["kind"] == "train" and "loss" in e]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    with open(f"{workdir}/eval_validation.json") as f:
        report = json.load(f)
    # the prompt is the rendering up to the last assistant message, its special tokens shown once
    first = report["generations"][0]
    assert first["prompt"].startswith("<|im_start|> user")  # word-level decode joins tokens with spaces
    assert first["prompt"].count("<|im_start|>") == 4 and first["prompt"].endswith("assistant \n")
    assert [g["reference"] for g in report["generations"]] == ["welcome"] * 3
    assert [g["prediction"] for g in report["generations"]] == ["welcome"] * 3  # learnt, decoded without </s>
    assert report["exact_match"] == 1.0


def test_generate_command_continues_a_conversation(trained, tmp_path, capsys):
    experiment, workdir, model_dir = trained
    inputs = write_jsonl(tmp_path / "inputs.jsonl", [{"messages": qa("grass")[:1], "id": 7},
                                                     {"messages": qa("sun")[:3]}])
    capsys.readouterr()
    assert cli.main(["generate", experiment, "--checkpoint", workdir, "--input", inputs]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()[-2:]]
    assert rows[0]["id"] == 7
    assert rows[0]["prompt"] == "<|im_start|>user\nwhat colour is the grass<|im_end|>\n<|im_start|>assistant\n"
    assert rows[0]["generation"] in ANSWERS.values()  # a learnt reply, decoded without <|im_end|>
    assert rows[1]["generation"] == "welcome"  # as in the evaluation of the same conversation
    # the base model (no checkpoint) prints a completion too
    assert cli.main(["generate", experiment, "--model", model_dir, "--input", inputs, "--max-new-tokens", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_generate_command_names_a_line_with_neither_messages_nor_a_prompt(trained, tmp_path, capsys):
    experiment, _, model_dir = trained
    inputs = write_jsonl(tmp_path / "inputs.jsonl", [{"messages": qa("sky")[:1]}, {"question": "what"}])
    capsys.readouterr()
    assert cli.main(["generate", experiment, "--model", model_dir, "--input", inputs]) == 2
    assert capsys.readouterr().err.strip() == (
        f"mgpt: generate: {inputs}:2: expected 'messages' (a conversation) or 'text' (a prompt); "
        "the object has keys ['question']")


# ------------------------------------------------------------ prompt/target records through the chat template


def test_prompt_target_records_through_the_chat_template(tmp_path):
    tokenizer = chat_tokenizer()
    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "what colour is the sky", "a": "blue"}])
    data_cfg = DataConfig(format="jsonl", train_file=path, prompt_template="{q}", target_column="a",
                          use_chat_template=True, system_prompt="be brief", max_length=32)
    examples = reading.read_examples(path, data_cfg, "none", task_name="generation")
    encoded = get_task("generation").encode(examples, tokenizer, data_cfg, {}, split="train", where="train")
    conversation = [msg("system", "be brief"), msg("user", "what colour is the sky"), msg("assistant", "blue")]
    ids = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=False)
    n = len(ids)
    np.testing.assert_array_equal(encoded.arrays["input_ids"][0][:n], ids)
    labels = encoded.arrays["labels"][0]
    assert [VOCAB[ids[i]] for i in range(n) if labels[i] != IGNORE_INDEX] == ["blue", "<|im_end|>", "\n"]
    assert encoded.prompt_ids == [tokenizer.apply_chat_template(conversation[:-1], tokenize=True, return_dict=False,
                                                                add_generation_prompt=True)]


def test_a_long_prompt_is_shortened_so_the_assistant_turn_is_kept(tmp_path, caplog):
    tokenizer = chat_tokenizer()
    long_prompt = " ".join(["what colour is the sky"] * 6)  # 30 words
    examples = [{"text": long_prompt, "text_pair": "blue"}]
    with caplog.at_level(logging.WARNING, logger="mgpt"):
        encoded = chat.encode_prompts_as_chat(examples, tokenizer, 20, where="train")
    assert "1 of 1 examples in train are longer than max_length=20" in caplog.text
    ids, labels = encoded.arrays["input_ids"][0], encoded.arrays["labels"][0]
    assert encoded.arrays["attention_mask"][0].sum() == 20
    assert [VOCAB[ids[i]] for i in range(20) if labels[i] != IGNORE_INDEX] == ["blue", "<|im_end|>", "\n"]


def test_validate_use_chat_template_needs_a_target_and_system_prompt_needs_it():
    def check(**data):
        return validate(ExperimentConfig(data=DataConfig(**dict(dict(format="jsonl", train_file="x.jsonl",
                                                                     validation_file="y.jsonl"), **data)),
                                         task=TaskConfig(kind="generation")))

    check(use_chat_template=True, prompt_template="{q}", target_column="a", system_prompt="be brief")
    with pytest.raises(ConfigError, match="data.use_chat_template=True: renders data.prompt_template"):
        check(use_chat_template=True)
    with pytest.raises(ConfigError, match="data.system_prompt='be brief': is the system turn"):
        check(system_prompt="be brief", target_column="a")


def test_eval_without_a_checkpoint_scores_the_pretrained_model(trained, tmp_path):
    """`mgpt eval` with no --checkpoint: zero-shot, the weights as model.name_or_path loads them."""
    from mgpt import config as config_lib
    from mgpt.train import evaluation, setup

    experiment, workdir, _ = trained
    output = str(tmp_path / "zero_shot.json")
    assert cli.main(["eval", experiment, "--split", "validation", "--output", output]) == 0
    with open(output) as f:
        zero_shot = json.load(f)
    run = setup.build_run(config_lib.load_experiment(experiment))
    expected, _ = evaluation.evaluate_split(run, run.params, "validation")
    assert zero_shot["params"].startswith("pretrained ")
    np.testing.assert_allclose(zero_shot["loss"], expected["loss"], rtol=1e-6)
    with open(f"{workdir}/eval_validation.json") as f:
        trained_loss = json.load(f)["loss"]
    assert zero_shot["loss"] > 2 * trained_loss  # the untrained model, not the run's
