"""GGUF out on the real SmolLM2-135M-Instruct: its GGUF file -> mgpt -> `mgpt convert` to GGUF (f32, f16, q8_0)
-> transformers' GGUF loader, logits against mgpt's and against transformers' own load of the original file.

    python experiments/benchmarks/smollm2_gguf_export.py --output bench_results/smollm2_gguf_export.json

Prints and writes, per dtype: the file size, the largest logit difference (absolute and relative to max|logit|)
on a padded batch, the share of positions whose arg-max token agrees, and whether the tokenizer ids and the
chat template survived.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax.numpy as jnp
import numpy as np
import torch
import transformers

from mgpt.known_models import smollm2_path
from mgpt.models import load_pretrained

TEXTS = ["The capital of France is", "In 1999, the café served 42 crêpes — naïve ☃ 🙂",
         "<|im_start|>user\nHow do I reset my card PIN?<|im_end|>\n<|im_start|>assistant\n"]


def torch_logits(directory, name, batch):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(input_ids=torch.tensor(batch["input_ids"]),
                     attention_mask=torch.tensor(batch["attention_mask"])).logits.numpy()


def compare(a, b, mask):
    diff = float(np.abs(a - b)[mask].max())
    return dict(max_abs=diff, relative=diff / float(np.abs(b[mask]).max()),
                argmax_agreement=float((a.argmax(-1) == b.argmax(-1))[mask].mean()))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="bench_results/smollm2_gguf_export.json")
    args = parser.parse_args()
    src = smollm2_path()
    model, params, spec, tokenizer = load_pretrained(src)
    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    mask = batch["attention_mask"].astype(bool)
    ours = np.asarray(model.apply({"params": params}, jnp.asarray(batch["input_ids"]),
                                  attention_mask=jnp.asarray(batch["attention_mask"])))
    original = torch_logits(os.path.dirname(src), os.path.basename(src), batch)
    result = {"source": os.path.basename(src), "source_mb": os.path.getsize(src) / 2**20,
              "mgpt_vs_transformers_on_the_source": compare(ours, original, mask), "exports": {}}
    with tempfile.TemporaryDirectory() as out:
        for dtype in ("f32", "f16", "q8_0"):
            path = os.path.join(out, f"smollm2.{dtype}.gguf")
            run = subprocess.run([sys.executable, "-m", "mgpt.cli", "convert", src, path, "--dtype", dtype],
                                 capture_output=True, text=True)
            if run.returncode:
                raise SystemExit(run.stderr)
            theirs = torch_logits(out, os.path.basename(path), batch)
            reread = transformers.AutoTokenizer.from_pretrained(out, gguf_file=os.path.basename(path))
            result["exports"][dtype] = dict(
                size_mb=os.path.getsize(path) / 2**20,
                transformers_vs_mgpt=compare(theirs, ours, mask),
                transformers_vs_transformers_on_the_source=compare(theirs, original, mask),
                token_ids_equal=all(reread(t)["input_ids"] == tokenizer(t)["input_ids"] for t in TEXTS),
                chat_template_equal=reread.chat_template == tokenizer.chat_template)
            print(dtype, json.dumps(result["exports"][dtype]), flush=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(result["mgpt_vs_transformers_on_the_source"]), f"written to {args.output}")


if __name__ == "__main__":
    main()
