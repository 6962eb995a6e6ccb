"""mgpt's training step against a plain PyTorch AdamW loop: same start, same batches, same parameters after.

With dropout off and identical initial weights (mgpt's initialised head exported to transformers),
three updates with AdamW (decay off for biases and LayerNorm), global-norm clipping and a linear
warmup/decay schedule must leave both frameworks with the same weights. This pins the whole
training math (loss normalisation over real tokens, clipping, decay mask, schedule) to the
reference, so differences between real runs come from randomness, not from the update.
"""

import functools

import jax
import numpy as np
import torch
from transformers import AutoModelForTokenClassification, get_linear_schedule_with_warmup

import mgpt
from mgpt import optim, parallel
from mgpt.config import OptimizerConfig, ParallelConfig
from mgpt.tasks import get_task
from mgpt.train import state as state_lib
from mgpt.train.step import train_step

from fixtures_tiny import tiny_bert


def test_three_adamw_steps_match_pytorch(tmp_path):
    base = tiny_bert(tmp_path / "bert")
    model, params, spec, tokenizer = mgpt.load_pretrained(base, task="token_classification", num_labels=5,
                                                          dropout=0.0, seed=3)
    exported = str(tmp_path / "exported")
    mgpt.save_pretrained(exported, spec, params, tokenizer)

    rng = np.random.default_rng(0)
    batches = []
    for _ in range(3):
        ids = rng.integers(5, 30, (4, 10)).astype(np.int32)
        mask = np.ones_like(ids)
        mask[1, 6:] = 0  # padding: must not count in the loss
        labels = rng.integers(0, 5, (4, 10)).astype(np.int32)
        labels[mask == 0] = -100
        labels[:, 0] = -100  # special token
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": labels,
                        "token_type_ids": np.zeros_like(ids), "example_weight": np.ones((4,), np.float32)})

    hp = dict(learning_rate=1e-2, weight_decay=0.1, warmup=1, total=3, clip=0.5)
    cfg = OptimizerConfig(name="adamw", learning_rate=hp["learning_rate"], weight_decay=hp["weight_decay"],
                          warmup_steps=hp["warmup"], schedule="linear", max_grad_norm=hp["clip"])
    tx = optim.make_optimizer(cfg, hp["total"], params)
    mesh = parallel.make_mesh(ParallelConfig(num_devices=1))
    state, _ = state_lib.create_state(params, tx, 0, mesh)
    step = jax.jit(functools.partial(train_step, model=model, task=get_task("token_classification"), optimizer=tx))
    for batch in batches:
        state, _ = step(state, batch)

    torch_model = AutoModelForTokenClassification.from_pretrained(exported, hidden_dropout_prob=0.0,
                                                                  attention_probs_dropout_prob=0.0)
    torch_model.train()

    def no_decay(name):
        return name.endswith("bias") or "LayerNorm" in name

    groups = [{"params": [p for n, p in torch_model.named_parameters() if not no_decay(n)],
               "weight_decay": hp["weight_decay"]},
              {"params": [p for n, p in torch_model.named_parameters() if no_decay(n)], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=hp["learning_rate"], eps=1e-8)
    schedule = get_linear_schedule_with_warmup(opt, hp["warmup"], hp["total"])
    for batch in batches:
        out = torch_model(input_ids=torch.tensor(batch["input_ids"], dtype=torch.long),
                          attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long),
                          token_type_ids=torch.tensor(batch["token_type_ids"], dtype=torch.long),
                          labels=torch.tensor(batch["labels"], dtype=torch.long))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(torch_model.parameters(), hp["clip"])
        opt.step()
        schedule.step()
        opt.zero_grad()

    trained = str(tmp_path / "trained")
    mgpt.save_pretrained(trained, spec, jax.device_get(state["params"]), tokenizer)
    ours = AutoModelForTokenClassification.from_pretrained(trained).state_dict()
    reference = torch_model.state_dict()
    moved = 0
    for name, value in reference.items():
        if name not in ours:
            continue
        np.testing.assert_allclose(ours[name].numpy(), value.detach().numpy(), atol=2e-5, err_msg=name)
        moved += int(not torch.equal(value, AutoModelForTokenClassification.from_pretrained(exported)
                                     .state_dict()[name])) if name.endswith("classifier.weight") else 0
    assert moved == 1  # the weights really changed
