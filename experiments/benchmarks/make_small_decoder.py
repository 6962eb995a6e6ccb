"""Make a small random-init GPT-2 with a byte-level BPE tokenizer trained on SciTLDR's training abstracts.

    python experiments/benchmarks/make_small_decoder.py bench_results/small_gpt2

For experiments/scitldr_summarization.py: no pretrained decoder installs offline.
"""

import json
import os
import sys

from tokenizers import ByteLevelBPETokenizer
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "experiments"))

from scitldr_summarization import DATA  # noqa: E402


def main(out_dir: str, vocab_size: int = 8000):
    texts = []
    with open(os.path.join(DATA, "train.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            texts.append(" ".join(record["source"]))
            texts += record["target"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=vocab_size, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>",
                                        unk_token="<|endoftext|>")
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=512, n_embd=256, n_layer=4, n_head=4,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    print(f"small GPT-2 ({sum(p.numel() for p in GPT2LMHeadModel(config).parameters()) / 1e6:.1f}M parameters, "
          f"vocab {len(tokenizer)}) written to {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench_results/small_gpt2")
