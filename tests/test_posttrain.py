"""Post-training with TRL (SFT, DPO, GRPO) plus a hidden-state regulariser: weight 0 is TRL
exactly; weight > 0 adds exactly weight x the regulariser's gradient over the selected tokens;
prompt and padding tokens stay out of the pairs unless asked; the CLI's run folder."""

import json

import pytest
import torch

trl = pytest.importorskip("trl")

from lmdisp.train.losses import regularizer  # noqa: E402
from lmdisp.train.posttrain import Regularizer, with_regularizer  # noqa: E402

CHAT = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
TRAINERS = {"sft": (trl.SFTTrainer, trl.SFTConfig), "dpo": (trl.DPOTrainer, trl.DPOConfig),
            "grpo": (trl.GRPOTrainer, trl.GRPOConfig)}


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """A tiny GPT-2 without dropout, saved with the test tokenizer and a chat template."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmdisp.models import load_tokenizer

    folder = tmp_path_factory.mktemp("chat-model")
    tok = load_tokenizer("tiny-bpe")
    tok.chat_template, tok.pad_token = CHAT, tok.eos_token
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tok), n_positions=128, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def rows(objective, n=16):
    user = lambda i: [{"role": "user", "content": f"what is {i} plus {i + 3}?"}]  # noqa: E731
    said = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    if objective == "sft":
        return [{"prompt": user(i), "completion": said(f"{2 * i + 3}, since {i} and {i + 3} make it")}
                for i in range(n)]
    if objective == "dpo":
        return [{"prompt": user(i), "chosen": said(str(2 * i + 3)), "rejected": said(f"maybe {i}")} for i in range(n)]
    return [{"prompt": f"what is {i} plus {i + 3}?", "answer": str(2 * i + 3)} for i in range(n)]


def write_rows(path, objective, n=16):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(objective, n)))
    return path


def length_reward(completions, **_):
    return [-abs(len(c) - 12) / 12 for c in completions]


def make_trainer(objective, folder, out, weight=None, tokens="completion", **overrides):
    from datasets import Dataset
    from transformers import AutoTokenizer

    trainer_class, config_class = TRAINERS[objective]
    args = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, report_to=[], use_cpu=True,
                logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True, learning_rate=1e-3,
                bf16=False)  # TRL's configs default to bf16 autocast, on this CPU too: exact maths in fp32
    args.update({"sft": dict(max_length=64), "dpo": dict(max_length=64),
                 "grpo": dict(num_generations=2, max_completion_length=6)}[objective])
    args.update(overrides)
    kwargs = dict(model=str(folder), args=config_class(**args), train_dataset=Dataset.from_list(rows(objective)),
                  processing_class=AutoTokenizer.from_pretrained(folder))
    if objective == "grpo":
        kwargs["reward_funcs"] = length_reward
    if weight is None:
        return trainer_class(**kwargs)
    reg = Regularizer("dispersion", weight, tokens=tokens, max_tokens=1024)
    return with_regularizer(trainer_class)(regularizer=reg, **kwargs)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "dpo", "grpo"])
def test_weight_zero_is_the_plain_trl_trainer(objective, chat_model, tmp_path):
    """Same losses and the same weights, bit for bit, after 2 steps."""
    plain = make_trainer(objective, chat_model, tmp_path / "plain")
    plain.train()
    ours = make_trainer(objective, chat_model, tmp_path / "ours", weight=0.0)
    ours.train()
    losses = [[r["loss"] for r in t.state.log_history if "loss" in r] for t in (plain, ours)]
    assert len(losses[0]) == 2 and losses[0] == losses[1]
    for (name, a), b in zip(plain.model.named_parameters(), ours.model.parameters()):
        assert torch.equal(a, b), name


def _sft_completion_mask(tok, ids, att):
    """Independently of TRL's labels: each batch row is found among the written rows by its
    chat-template tokens; the assistant turn's positions are the selected ones."""
    mask = torch.zeros_like(ids)
    for r in range(len(ids)):
        real = ids[r, : int(att[r].sum())].tolist()
        for row in rows("sft"):
            full = tok.apply_chat_template(row["prompt"] + row["completion"], tokenize=True)["input_ids"]
            if full == real:
                p = len(tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True)["input_ids"])
                mask[r, p:len(full)] = 1
                break
        else:
            raise AssertionError(f"batch row {r} is none of the written rows")
    return mask


def _batch(trainer, objective):
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by train() otherwise
    if objective == "grpo":
        trainer._step, trainer._buffered_inputs = 0, None
        batch = next(iter(trainer.get_train_dataloader()))
        return trainer._prepare_inputs(batch)
    return trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))


def _direct(objective, trainer, inputs, tokens, tok=None):
    """(input ids, attention mask, selected mask) built from the batch without lmdisp's code."""
    if objective == "grpo":
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        sel = torch.cat([torch.zeros_like(inputs["prompt_mask"]), inputs["completion_mask"]], 1)
    else:
        ids, att = inputs["input_ids"], inputs["attention_mask"]
        sel = inputs["completion_mask"] if objective == "dpo" else None
    if objective == "sft":
        sel = _sft_completion_mask(tok, ids, att)
    return ids, att, (att if tokens == "all" else sel)


def _grads(model):
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


@pytest.mark.parametrize("objective,tokens", [("sft", "completion"), ("sft", "all"), ("dpo", "completion"),
                                              ("grpo", "completion")])
def test_regulariser_gradient_is_weight_times_the_direct_one(objective, tokens, chat_model, tmp_path):
    from transformers import AutoTokenizer

    weight = 0.7
    trainer = make_trainer(objective, chat_model, tmp_path / "t", weight=weight, tokens=tokens)
    inputs = _batch(trainer, objective)
    model = trainer.model
    ids, att, sel = _direct(objective, trainer, inputs, tokens, AutoTokenizer.from_pretrained(chat_model))
    assert sel.sum() < att.sum() or tokens == "all"  # the prompt is left out
    model.zero_grad()
    trainer.compute_loss(model, inputs).backward()
    with_reg = _grads(model)
    trainer.regularizer.weight = 0.0  # TRL's loss alone, same batch
    model.zero_grad()
    trainer.compute_loss(model, inputs).backward()
    plain = _grads(model)
    model.zero_grad()
    hs = model(input_ids=ids, attention_mask=att, output_hidden_states=True).hidden_states
    (weight * regularizer(hs, sel, "dispersion")).backward()
    direct = _grads(model)
    assert any(d.abs().sum() > 0 for d in direct)
    for a, b, d in zip(with_reg, plain, direct):
        torch.testing.assert_close(a - b, d, atol=2e-6, rtol=1e-4)


def test_completion_tokens_follow_trls_labels_and_padding_stays_out():
    from lmdisp.train.posttrain import Regularizer, completion_tokens, selected_mask

    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 10]])
    att = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    labels = torch.tensor([[-100, -100, 7, 8, -100, -100], [-100, 6, 7, 8, 9, 10]])
    inputs = {"input_ids": ids, "attention_mask": att, "labels": labels}
    assert torch.equal(completion_tokens(inputs)[1], (labels != -100).long())
    assert torch.equal(selected_mask(Regularizer(), inputs, ids, att), torch.tensor([[0, 0, 1, 1, 0, 0],
                                                                                     [0, 1, 1, 1, 1, 1]]))
    assert torch.equal(selected_mask(Regularizer(tokens="all"), inputs, ids, att), att)
    from lmdisp.train.posttrain import TokenLocationError

    with pytest.raises(TokenLocationError, match="reg_tokens=all"):
        selected_mask(Regularizer(), inputs, ids[:, :5], att[:, :5])


@pytest.mark.slow
def test_gradient_accumulation_keeps_the_regulariser_a_mean(chat_model, tmp_path):
    """SFT with the regulariser: 4 sequences x 1 micro-step == 2 x 2 (same weights)."""
    a = make_trainer("sft", chat_model, tmp_path / "a", weight=1.0)
    a.train()
    b = make_trainer("sft", chat_model, tmp_path / "b", weight=1.0, per_device_train_batch_size=2,
                     gradient_accumulation_steps=2)
    b.train()
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, atol=2e-5, rtol=1e-4, msg=name)
    reg = [[r["reg"] for r in t.state.log_history if "reg" in r] for t in (a, b)]
    assert reg[0] == pytest.approx(reg[1], rel=1e-4)


def _sft_args(chat_model, data, *extra):
    return ["sft", "--model", chat_model, "--dataset", data, "--loss", "dispersion", "--lambda", "0.5",
            "--batch-size", "4", "--logging-steps", "1", "--lr", "1e-3", "--set", "condensation_sequences=2",
            "--set", "heldout_length=32", *map(str, extra)]


def test_sft_command_writes_midtrains_run_folder_and_evaluate_reads_it(run_cli, chat_model, tmp_path):
    from test_evaluation import write_tasks

    data = write_rows(tmp_path / "chat.jsonl", "sft")
    res = run_cli(*_sft_args(chat_model, data, "--max-steps", "2", "--condensation-every", "1",
                             "--output", tmp_path / "run"))
    assert res.code == 0, res.err
    run = tmp_path / "run"
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if "reg" in r]
    assert [r["step"] for r in logs] == [1, 2]
    for r in logs:  # the logged loss is TRL's objective + lambda x reg
        assert r["loss"] == pytest.approx(r["objective"] + 0.5 * r["reg"], abs=2e-6)
    import pandas as pd

    assert sorted(pd.read_csv(run / "condensation.csv")["step"].unique()) == [0, 1, 2]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["labels"]["method"] == "sft + dispersion (lambda=0.5)"
    assert (run / "final" / "model.safetensors").is_file() and (run / "final" / "tokenizer.json").is_file()
    again = run_cli(*_sft_args(chat_model, data, "--max-steps", "2", "--condensation-every", "1", "--output", run,
                               "--resume"))
    assert again.code == 0 and "finished run" in again.out and "nothing changed" in again.out  # midtrain's rules
    (tmp_path / "tasks").mkdir()
    tasks = write_tasks(tmp_path / "tasks")
    ev = run_cli("evaluate", "--model", run, "--tasks", "toy_mc", "--include-path", tasks, "--limit", "4",
                 "--output", tmp_path / "ev")
    assert ev.code == 0, ev.err
    assert json.loads((tmp_path / "ev" / "manifest.json").read_text())["labels"]["method"].startswith("sft + ")


@pytest.mark.parametrize("args,message", [
    (["--dataset", "{prefs}"], "sft needs messages or prompt+completion or text"),
    (["--reg-tokens", "prompt"], "--reg-tokens 'prompt': choose one of completion, all"),
    (["--set", "trl_args={packin: true}"], "trl_args: packin not a SFTConfig field"),
])
def test_bad_sft_input_is_one_line_and_leaves_no_folder(run_cli, chat_model, tmp_path, args, message):
    data = write_rows(tmp_path / "chat.jsonl", "sft")
    prefs = write_rows(tmp_path / "prefs.jsonl", "dpo")
    base = _sft_args(chat_model, data)
    if args[0] == "--dataset":
        i = base.index("--dataset")
        base[i + 1] = str(prefs)
        args = []
    res = run_cli(*base, *args, "--max-steps", "2", "--output", tmp_path / "run")
    assert res.code == 2 and message in res.err and "Traceback" not in res.err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


RESUME_ARGS = {"sft": [], "dpo": [], "grpo": ["--reward", "length:12", "--num-generations", "2", "--max-completion-length", "6"]}


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["sft", "dpo", "grpo"])
def test_resume_after_sigkill_reaches_the_same_weights(objective, chat_model, tmp_path):
    """SFT (data order), DPO (its reference model rebuilt from --model) and GRPO (sampled
    completions too: the generator's RNG is in the checkpoint)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from safetensors.torch import load_file

    data = write_rows(tmp_path / "rows.jsonl", objective, n=32)
    args = [*_sft_args(chat_model, data, "--max-steps", "8", "--save-steps", "2", "--condensation-every", "0"),
            *RESUME_ARGS[objective]]
    args[0] = objective
    cmd = lambda out, *more: [sys.executable, "-m", "lmdisp", *args, "--output", str(out), *more]  # noqa: E731
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    from lmdisp.config import load_config
    from lmdisp.train.posttrain_config import PostTrainConfig
    from lmdisp.train.posttrain_run import run_posttrain

    # the reference run in-process (one interpreter start less), with the settings of `args`
    extra = {"reward": "length:12", "num_generations": 2, "max_completion_length": 6} if objective == "grpo" else {}
    run_posttrain(load_config(PostTrainConfig, None, ["condensation_sequences=2", "heldout_length=32"], {
        "model": str(chat_model), "dataset": str(data), "loss": "dispersion", "lambda_disp": 0.5, "batch_size": 4,
        "logging_steps": 1, "lr": 1e-3, "max_steps": 8, "save_steps": 2, "condensation_every": 0,
        "output": str(tmp_path / "full"), **extra}, fixed={"objective": objective}))
    proc = subprocess.Popen(cmd(tmp_path / "killed"), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "killed" / "checkpoints" / "checkpoint-4" / "trainer_state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run finished before it could be killed"
    subprocess.run(cmd(tmp_path / "killed", "--resume"), check=True, env=env, capture_output=True)
    full = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-6, rtol=1e-5)
    steps = [json.loads(x)["step"] for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
             if "reg" in x]
    assert steps == list(range(1, 9))  # none lost, none logged twice


def test_rule_rewards_and_their_refusals():
    from lmdisp.errors import ConfigError
    from lmdisp.train.rewards import reward_functions

    answer, length, regex = reward_functions("answer,length:4,regex:^The")
    said = ["The answer is 68.", "23 + 45 = 68", "68 is not it, 67", [{"role": "assistant", "content": "It is 68"}]]
    assert answer(said, answer=["68"] * 4) == [1.0, 1.0, 0.0, 1.0]
    assert length(["one two three four", "one two"]) == [0.0, -0.5]
    assert regex(["The end", "the end"]) == [1.0, 0.0]
    for bad, message in [("lenght:3", "use answer, length:N"), ("length:0", "use answer"), ("regex:(", "not a regular"),
                         ("", "at least one")]:
        with pytest.raises(ConfigError, match=message):
            reward_functions(bad)
