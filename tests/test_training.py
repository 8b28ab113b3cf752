"""The trainer: configs, refusals, loss scaling, baselines, condensation trace, resume, NaN stop."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from lmdisp.config import load_config
from lmdisp.errors import ConfigError
from lmdisp.train.config import TrainConfig, parse_tokens
from lmdisp.train.trainer import DispersionTrainer, NonFiniteLoss
from lmdisp.train.run import run_train

REPO = Path(__file__).resolve().parent.parent
TINY = dict(model="random:tiny-gpt2", dataset="builtin", context_length=32, batch_size=4, grad_accum=1,
            lr=1e-3, gradient_checkpointing=False, condensation_every=0, logging_steps=1, save_steps=1000,
            warmup_ratio=0.0, train_tokens=4096)
TINY_FLAGS = ["--model", "random:tiny-gpt2", "--dataset", "builtin", "--context-length", "32", "--batch-size", "4",
              "--grad-accum", "1", "--no-gradient-checkpointing", "--condensation-every", "0"]


def tiny(tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return TrainConfig(**{**TINY, "output": str(tmp_path / "run"), **kw})


def test_the_trainer_internals_lmdisp_relies_on_still_exist():
    """`TRAINER_INTERNALS` lists every private Trainer member lmdisp overrides or reads: each
    is still there (a method, a class attribute or set in the Trainer's own code), with the
    signature lmdisp overrides, and the floor in pyproject.toml is the version they were checked against."""
    import inspect
    import re

    from transformers import Trainer

    from lmdisp.train.trainer import TRAINER_INTERNALS, TRAINER_INTERNALS_CHECKED

    source = inspect.getsource(Trainer)
    for name in TRAINER_INTERNALS:
        assert hasattr(Trainer, name) or re.search(rf"self\.{name}\s*=", source), name
    assert list(inspect.signature(Trainer._save_checkpoint).parameters) == ["self", "model", "trial"]
    assert "self.loss_is_scaled_for_ga" in inspect.getsource(Trainer.training_step)
    floor = re.search(r'"transformers>=([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert TRAINER_INTERNALS_CHECKED.startswith(floor)


def test_parse_tokens():
    assert parse_tokens("200M") == 200_000_000 and parse_tokens("1.5B") == 1_500_000_000
    assert parse_tokens("50k") == 50_000 and parse_tokens(1000) == 1000


def _row(stem: str, losses) -> tuple[str, str]:
    """`<model>-<loss>[-<variant>]` -> (loss, variant): the longest loss name in the stem."""
    loss = max((n for n in losses if f"-{n}-" in f"-{stem}-"), key=len, default=None)
    assert loss, f"{stem}: names no loss of {sorted(losses)}"
    return loss, f"{stem}-".split(f"-{loss}-", 1)[1].rstrip("-")


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "midtrain").glob("*.yaml")), ids=lambda p: p.name)
def test_every_midtrain_config_is_the_row_its_name_says(path):
    """`gpt2-dispersion-tau0.5.yaml` trains with loss dispersion and tau 0.5, nothing else."""
    from lmdisp.train.config import LOSS_OPTIONS

    cfg = load_config(TrainConfig, path)
    loss, variant = _row(path.stem, LOSS_OPTIONS)
    assert cfg.loss == loss, f"{path.name}: loss {cfg.loss!r}"
    if variant.startswith("lambda"):
        assert cfg.lambda_disp == float(variant[len("lambda"):]) and cfg.location == "all"
    elif variant.startswith("tau"):
        assert cfg.tau == float(variant[len("tau"):]) and cfg.location == "all"
    else:  # a location row (Table 3) or the plain row
        assert cfg.location == (variant.replace("-", "_") or "all"), f"{path.name}: location {cfg.location!r}"


def test_config_precedence(tmp_path):
    (tmp_path / "c.yaml").write_text("loss: dispersion\nlr: 1.0e-4\ntau: 0.5\nseed: 3\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml", ["tau=0.7"], {"seed": 9})
    assert (cfg.loss, cfg.lr, cfg.tau, cfg.seed, cfg.lambda_disp) == ("dispersion", 1e-4, 0.7, 9, 0.1)
    (tmp_path / "bad.yaml").write_text("loss: ce\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(TrainConfig, tmp_path / "bad.yaml")


@pytest.fixture
def no_model_load(monkeypatch):
    """Refusals must happen before any weights are loaded."""
    import lmdisp.models

    def boom(*a, **k):
        raise AssertionError("a model was loaded before the input was validated")

    monkeypatch.setattr(lmdisp.models, "load_model", boom)


@pytest.mark.parametrize("extra, message", [
    (["--lambda", "-0.1"], "--lambda -0.1: must be >= 0"),
    (["--tau", "0"], "--tau 0.0: must be >= 1e-06"),
    (["--loss", "magic"], "--loss 'magic'"),
    (["--loss", "dispersion", "--location", "middle"], "--location 'middle'"),
    (["--train-tokens", "100"], "less than one optimiser step"),
    (["--context-length", "512", "--train-tokens", "1M"], "exceeds the 256 positions"),
])
def test_bad_training_input_is_refused_early(run_cli, no_model_load, tmp_path, extra, message):
    res = run_cli("midtrain", *TINY_FLAGS, "--output", tmp_path / "r", *extra)
    assert res.code == 2, res.err
    assert message in res.err and "Traceback" not in res.err


def test_empty_corpus_is_refused(run_cli, no_model_load, tmp_path):
    (tmp_path / "empty.txt").write_text("\n   \n\n")
    res = run_cli("midtrain", *TINY_FLAGS[:2], "--dataset", tmp_path / "empty.txt", "--train-tokens", "10k",
                  "--context-length", "32", "--batch-size", "4", "--grad-accum", "1")
    assert res.code == 2 and "no non-empty text" in res.err


def _trainer(cfg, tmp_path):
    from transformers import default_data_collator

    from lmdisp.models import default_tokenizer, load_model, load_tokenizer
    from lmdisp.train.run import build_data, training_arguments

    tok = load_tokenizer(default_tokenizer(cfg.model))
    train, _ = build_data(cfg, tok)
    model = load_model(cfg.model, dtype="float32", device="cpu", lm_head=True, seed=0).model.train()
    args = training_arguments(cfg, tmp_path, 2, 1)
    return DispersionTrainer(model=model, args=args, train_dataset=train, data_collator=default_data_collator,
                             run_config=cfg), train


def test_ce_loss_is_exactly_the_parents(tmp_path):
    from transformers import Trainer

    trainer, train = _trainer(tiny(tmp_path), tmp_path)
    batch = {k: torch.as_tensor(v) for k, v in train[:4].items()}
    torch.manual_seed(0)  # same dropout masks for both calls
    ours = trainer.compute_loss(trainer.model, batch)
    torch.manual_seed(0)
    parent = Trainer.compute_loss(trainer, trainer.model, batch)
    assert torch.equal(ours, parent)


def test_dispersion_adds_lambda_times_regulariser(tmp_path):
    from lmdisp.train.losses import regularizer

    cfg = tiny(tmp_path, loss="dispersion", lambda_disp=0.5)
    trainer, train = _trainer(cfg, tmp_path)
    batch = {k: torch.as_tensor(v) for k, v in train[:4].items()}
    trainer.model.eval()  # no dropout: both forward passes must see the same network
    trainer.model.training = True  # ... while compute_loss still takes its training path
    total = trainer.compute_loss(trainer.model, batch)
    out = trainer.model(**batch, output_hidden_states=True)
    expected = out.loss + 0.5 * regularizer(out.hidden_states, batch["attention_mask"], "dispersion")
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)


def _weights(run):
    return load_file(str(Path(run.final) / "model.safetensors"))


def test_gradient_accumulation_scales_the_regulariser_like_the_loss(tmp_path):
    """Same global batch: 4 x 1 micro-step == 2 x 2 micro-steps, with the regulariser on."""
    a = run_train(tiny(tmp_path / "a", loss="dispersion", lambda_disp=1.0, train_tokens=3 * 128))
    b = run_train(tiny(tmp_path / "b", loss="dispersion", lambda_disp=1.0, train_tokens=3 * 128,
                       batch_size=2, grad_accum=2))
    wa, wb = _weights(a), _weights(b)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=1e-4)
    ce_a = [r["ce"] for r in a.metrics if "ce" in r]
    ce_b = [r["ce"] for r in b.metrics if "ce" in r]
    reg_a = [r["reg"] for r in a.metrics if "reg" in r]
    reg_b = [r["reg"] for r in b.metrics if "reg" in r]
    assert ce_a == pytest.approx(ce_b, rel=1e-4) and reg_a == pytest.approx(reg_b, rel=1e-4)


def test_run_folder_contents_and_condensation_trace(tmp_path):
    import pandas as pd

    run = run_train(tiny(tmp_path, loss="dispersion", train_tokens=6 * 128, condensation_every=3,
                         condensation_sequences=4))
    trace = pd.read_csv(run.path / "condensation.csv")
    assert sorted(trace["step"].unique()) == [0, 3, 6]
    assert trace.groupby("step").size().tolist() == [5, 5, 5]  # embedding + 4 blocks
    assert (run.path / "condensation.png").is_file()
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    train_logs = [r for r in lines if "ce" in r]  # the others: held-out loss at each snapshot
    assert {"ce", "reg", "loss", "learning_rate", "tokens_per_s"} <= set(train_logs[0])
    assert [r["step"] for r in lines if "heldout_loss" in r] == [0, 3, 6]
    manifest = json.loads((run.path / "manifest.json").read_text())
    assert manifest["seed"] == 1 and manifest["steps"] == 6 and "git_commit" in manifest
    assert "peak_rss_mib" in manifest["memory"] and manifest["wall_time_s"] > 0
    assert (run.final / "model.safetensors").is_file() and (run.final / "tokenizer.json").is_file()
    assert list((run.path / "checkpoints").glob("checkpoint-*/model.safetensors"))
    # the final model is a measurable model folder
    from lmdisp.models import load_model

    assert load_model(str(run.final)).num_layers == 4


def test_run_folder_is_not_reused_for_another_config(tmp_path, run_cli):
    run_train(tiny(tmp_path, train_tokens=128))
    res = run_cli("midtrain", *TINY_FLAGS, "--train-tokens", "128", "--output", tmp_path / "run", "--lr", "0.001",
                  "--set", "warmup_ratio=0", "--set", "save_steps=1000", "--logging-steps", "1", "--set", "weight_decay=0.05")
    assert res.code == 2 and "different config" in res.err and "weight_decay" in res.err
    res = run_cli("midtrain", *TINY_FLAGS, "--train-tokens", "128", "--output", tmp_path / "run", "--lr", "0.001",
                  "--set", "warmup_ratio=0", "--set", "save_steps=1000", "--logging-steps", "1")
    assert res.code == 2 and "finished run" in res.err and "new --output" in res.err


def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    import lmdisp.train.trainer as trainer_mod

    real = trainer_mod.regularizer
    calls = {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        value = real(*a, **k)
        return value * float("nan") if calls["n"] > 3 else value

    monkeypatch.setattr(trainer_mod, "regularizer", poisoned)
    with pytest.raises(NonFiniteLoss, match="step 4"):
        run_train(tiny(tmp_path, loss="dispersion", train_tokens=8 * 128, save_steps=2))
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert ckpts == ["checkpoint-2"]
    assert not (tmp_path / "run" / "final").exists()


@pytest.mark.parametrize("first_nan, steps, kept", [
    (7, "steps 5-8", ["checkpoint-3", "checkpoint-6"]),  # found at the step-8 log
    (6, "steps 5-6", ["checkpoint-3"]),                  # found before the step-6 save: not written
])
def test_a_nan_between_logs_stops_within_one_interval(tmp_path, monkeypatch, first_nan, steps, kept):
    """logging_steps 4: metrics stay on the device between logs, yet the run stops at the next
    log (or checkpoint save), names the steps since the last log and keeps only good checkpoints."""
    import lmdisp.train.trainer as trainer_mod

    real, calls = trainer_mod.regularizer, {"n": 0}

    def poisoned(*a, **k):
        calls["n"] += 1
        value = real(*a, **k)
        return value * float("nan") if calls["n"] >= first_nan else value

    monkeypatch.setattr(trainer_mod, "regularizer", poisoned)
    with pytest.raises(NonFiniteLoss, match=steps):
        run_train(tiny(tmp_path, loss="dispersion", train_tokens=12 * 128, save_steps=3, logging_steps=4,
                       save_total_limit=5))
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == kept
    last = load_file(str(tmp_path / "run" / "checkpoints" / kept[-1] / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in last.values())
    logged = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged == [1, 4]  # nothing logged after the NaN


class _Spy(TrainerCallback):
    """Records, inside a real `run_train`, the input embeddings and the optimiser's step count
    for them and for one body parameter, at the begin (after lmdisp's own callbacks) and end
    of every step; optionally the embedding layer's output in training (a forward hook added
    after transformers' NEFTune hook, so it sees what the model receives)."""

    def __init__(self, embedding_outputs: bool = False):
        self.begin, self.end, self.noise, self.hook = {}, {}, [], None
        self.embedding_outputs = embedding_outputs

    @staticmethod
    def _snapshot(model, optimizer):
        emb = model.get_input_embeddings().weight
        body = next(p for p in model.parameters() if p is not emb)
        step = lambda p: int(optimizer.state[p]["step"]) if optimizer.state.get(p) else 0  # noqa: E731
        return emb.detach().clone(), step(emb), step(body)

    def _record(self, module, inputs, output):
        if module.training:
            self.noise.append((output - module.weight[inputs[0]]).detach())

    def on_step_begin(self, args, state, control, model=None, optimizer=None, **kw):
        self.begin[state.global_step] = self._snapshot(model, optimizer)
        if self.embedding_outputs and self.hook is None:
            self.hook = model.get_input_embeddings().register_forward_hook(self._record)

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        self.end[state.global_step] = self._snapshot(model, optimizer)


def test_noisy_embedding_adds_the_authors_noise_to_the_embeddings(tmp_path):
    """NEFTune as the authors (and Jain et al.) define it: uniform noise of amplitude
    alpha / sqrt(L d) on the embedding output in training, measured inside an lmdisp run."""
    from lmdisp.train.run import training_arguments

    assert training_arguments(tiny(tmp_path, loss="dispersion"), tmp_path, 1, 1).neftune_noise_alpha is None
    spy = _Spy(embedding_outputs=True)
    run_train(tiny(tmp_path, loss="noisy-embedding", noise_alpha=5.0, train_tokens=2 * 128), callbacks=[spy])
    spy.hook.remove()
    noise = torch.cat([n.flatten() for n in spy.noise])
    d = spy.begin[0][0].shape[1]
    bound = 5.0 / math.sqrt(32 * d)  # alpha / sqrt(L d), L = 32 tokens per sequence
    assert len(spy.noise) == 2 and noise.numel() == 2 * 4 * 32 * d
    assert noise.abs().max() <= bound * (1 + 1e-5) and noise.abs().max() >= 0.99 * bound
    assert noise.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.03)  # uniform on [-b, b]
    assert abs(noise.mean().item()) < 0.02 * bound


def test_active_forgetting_resets_embeddings_and_their_optimiser_state(tmp_path):
    from lmdisp.train.forgetting import forgetting_cycle

    cfg = tiny(tmp_path, loss="active-forgetting", forget_every=3, forget_lr=1e-4, forget_warmup=1,
               forget_schedule="cycle")
    trainer, _ = _trainer(cfg, tmp_path)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    emb = trainer.model.get_input_embeddings().weight
    (emb_group,) = [g for g in trainer.optimizer.param_groups if any(p is emb for p in g["params"])]
    assert emb_group["lr"] == pytest.approx(1e-4 * forgetting_cycle(1, 3)(0)) and len(emb_group["params"]) == 1
    assert emb_group["weight_decay"] == cfg.weight_decay == 0.1  # the authors' decay group
    f = forgetting_cycle(2, 10)
    assert [round(f(s), 3) for s in (0, 1, 2, 6, 9, 10)] == [0.5, 1.0, 1.0, 0.5, 0.125, 0.5]


def test_active_forgetting_run_reinitialises_the_embeddings_at_each_reset(tmp_path):
    """forget_every 2 over 5 steps: before steps 3 and 5 (global steps 2 and 4) every embedding
    row is redrawn from N(0, 0.02), unrelated to the trained one, and Adam's state for the
    embeddings starts over while the body's keeps counting; nothing happens between resets."""
    spy = _Spy()
    run = run_train(tiny(tmp_path, loss="active-forgetting", forget_every=2, train_tokens=5 * 128), callbacks=[spy])
    assert run.steps == 5
    for step in (1, 3):  # no reset: the weights the last step left
        assert torch.equal(spy.begin[step][0], spy.end[step][0])
    for step in (2, 4):
        trained, fresh = spy.end[step][0], spy.begin[step][0]
        assert ((fresh - trained).abs().amax(dim=1) > 0).all()  # every row redrawn
        corr = torch.corrcoef(torch.stack([fresh.flatten(), trained.flatten()]))[0, 1]
        assert abs(corr.item()) < 0.05, corr
        assert fresh.std().item() == pytest.approx(0.02, rel=0.05) and abs(fresh.mean().item()) < 1e-3
        assert spy.end[step][1:] == (2, step)  # (embeddings, body) Adam steps
        assert spy.begin[step][1:] == (0, step)  # the embeddings' optimiser state cleared
    assert spy.end[3][1:] == (1, 3) and spy.end[5][1:] == (1, 5)  # restarted after each reset


def _cli(*args):
    return [sys.executable, "-m", "lmdisp", "midtrain", *map(str, args)]


@pytest.mark.slow
def test_resume_after_sigkill_reaches_the_same_weights(tmp_path):
    """kill -9 mid-run, with a checkpoint save cut short too: --resume ends at the same weights."""
    args = [*TINY_FLAGS, "--loss", "dispersion", "--train-tokens", str(24 * 128), "--save-steps", "4",
            "--lr", "0.001", "--logging-steps", "2"]
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    subprocess.run(_cli(*args, "--output", tmp_path / "full"), check=True, env=env, cwd=REPO,
                   capture_output=True)
    proc = subprocess.Popen(_cli(*args, "--output", tmp_path / "killed"), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while not (ckpts / "checkpoint-8" / "trainer_state.json").exists() and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "final").exists(), "the run finished before it could be killed"
    # A save cut short by the kill: weights written, trainer_state.json not yet.
    partial = ckpts / "checkpoint-20"
    assert not partial.exists()
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)
    subprocess.run(_cli(*args, "--output", tmp_path / "killed", "--resume"), check=True, env=env, cwd=REPO,
                   capture_output=True)
    full = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    resumed = load_file(str(tmp_path / "killed" / "final" / "model.safetensors"))
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], atol=1e-6, rtol=1e-5)
    assert list(ckpts.glob(".incomplete-checkpoint-20-*"))  # moved aside, not deleted
    records = [json.loads(x) for x in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "ce" in r]
    assert steps == sorted(set(steps)) == [1, *range(2, 25, 2)]  # none lost, none logged twice


@pytest.mark.slow
def test_two_process_gloo_run_matches_one_process(tmp_path):
    """torchrun --nproc_per_node 2 (CPU, gloo), 2 sequences each == 1 process with 4."""
    import os

    common = [*TINY_FLAGS[:6], "--grad-accum", "1", "--no-gradient-checkpointing", "--condensation-every", "4",
              "--loss", "dispersion", "--train-tokens", str(8 * 128), "--logging-steps", "1", "--lr", "0.001",
              "--set", "scale_lr=false", "--set", "warmup_ratio=0"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lmdisp", "midtrain"]
    two = subprocess.run([*torchrun, *common, "--batch-size", "2", "--set", f"results_dir={tmp_path / 'res2'}"],
                         env=env, cwd=REPO, capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    subprocess.run(_cli(*common, "--batch-size", "4", "--output", tmp_path / "one"), env=env, cwd=REPO,
                   check=True, capture_output=True)
    (run2,) = list((tmp_path / "res2" / "midtrain").iterdir())  # rank 0 alone made the folder
    assert two.stdout.count("final model") == 1

    def curve(folder):
        records = [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["ce"], r["reg"]) for r in records if "ce" in r]

    c2, c1 = curve(run2), curve(tmp_path / "one")
    assert [s for s, _, _ in c2] == [s for s, _, _ in c1] == list(range(1, 9))  # each step logged once
    for (_, ce2, reg2), (_, ce1, reg1) in zip(c2, c1):
        assert ce2 == pytest.approx(ce1, rel=1e-3) and reg2 == pytest.approx(reg1, rel=1e-3)
    trace = (run2 / "condensation.csv").read_text().splitlines()
    assert len(trace) == 1 + 3 * 5  # header + steps 0, 4, 8 x 5 layers, written once
    assert (run2 / "final" / "model.safetensors").is_file()


@pytest.mark.slow
def test_toy_dispersion_lowers_late_layer_condensation_at_similar_ce(tmp_path):
    """Figure 7's direction at toy scale: same start and data, ce vs ce + 0.1 * dispersion."""
    import pandas as pd

    results = {}
    for loss in ("ce", "dispersion"):
        cfg = load_config(TrainConfig, REPO / "configs" / "midtrain" / "tiny-dispersion.yaml", None,
                          {"loss": loss, "train_tokens": "80k", "output": str(tmp_path / loss),
                           "condensation_every": 1000, "logging_steps": 25})
        run = run_train(cfg)
        trace = pd.read_csv(run.path / "condensation.csv")
        last = trace[trace["step"] == trace["step"].max()]
        late = last[last["layer"] > last["layer"].max() // 2]["mean_cos"].mean()
        ce = [r["ce"] for r in run.metrics if "ce" in r][-2:]
        results[loss] = (late, sum(ce) / len(ce))
    (late_ce, ce_ce), (late_disp, ce_disp) = results["ce"], results["dispersion"]
    assert late_disp < late_ce - 0.05, results
    assert abs(ce_disp - ce_ce) / ce_ce < 0.03, results


def test_lora_run_saves_adapter_and_a_merged_model(tmp_path):
    from lmdisp.models import load_model

    run = run_train(tiny(tmp_path, model="random:tiny-llama", loss="dispersion", lora=True, train_tokens=3 * 128))
    assert (run.path / "adapter" / "adapter_model.safetensors").is_file()
    merged = load_model(str(run.final))
    base = load_model("random:tiny-llama", seed=1)
    changed = [n for (n, p), (_, q) in zip(merged.model.named_parameters(), base.model.named_parameters())
               if not torch.equal(p, q)]
    assert changed and all("proj" in n or "mlp" in n for n in changed)  # only LoRA-wrapped linears moved


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "pretrain").glob("*.yaml")), ids=lambda p: p.name)
def test_every_pretrain_config_parses(path):
    assert load_config(TrainConfig, path, fixed={"init": "scratch"}).init == "scratch"


def test_pretrain_starts_from_fresh_weights(run_cli, tmp_path):
    res = run_cli("pretrain", "--model", "tiny-llama", *TINY_FLAGS[2:], "--train-tokens", "256",
                  "--output", tmp_path / "pre")
    assert res.code == 0, res.err
    import yaml

    saved = yaml.safe_load((tmp_path / "pre" / "config.yaml").read_text())
    assert saved["init"] == "scratch" and saved["model"] == "tiny-llama"  # the config as given, never rewritten
    manifest = json.loads((tmp_path / "pre" / "manifest.json").read_text())
    assert manifest["resolved"]["model"] == "random:tiny-llama" and manifest["resolved"]["start"] == "new"
    assert (tmp_path / "pre" / "final" / "model.safetensors").is_file()


def test_distillation_loss_matches_a_direct_kl():
    from lmdisp.train.distill import DistillTrainer

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    T = 2.0
    value = DistillTrainer.distillation_loss(s, t, mask, T)
    p, q = torch.softmax(t.double() / T, -1), torch.softmax(s.double() / T, -1)
    kl = (p * (p.log() - q.log())).sum(-1)
    expected = kl[mask.bool()].mean() * T**2
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    assert DistillTrainer.distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-6)
    x = torch.randn(1, 3, 4, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda a: DistillTrainer.distillation_loss(a, t[:1, :3, :4].double(), None, T), (x,))


def test_distill_run_logs_kd_and_needs_a_teacher(run_cli, tmp_path):
    res = run_cli("distill", *TINY_FLAGS, "--train-tokens", "256", "--output", tmp_path / "d")
    assert res.code == 2 and "needs --teacher" in res.err
    res = run_cli("midtrain", *TINY_FLAGS, "--train-tokens", "256", "--teacher", "random:tiny-llama",
                  "--output", tmp_path / "m")
    assert res.code == 2 and "No such option" in res.err  # distill's options are distill's alone
    res = run_cli("midtrain", *TINY_FLAGS, "--train-tokens", "256", "--set", "teacher=random:tiny-llama",
                  "--output", tmp_path / "m")
    assert res.code == 2 and "distill only" in res.err
    res = run_cli("distill", *TINY_FLAGS, "--train-tokens", str(3 * 128), "--teacher", "random:tiny-llama",
                  "--loss", "dispersion", "--logging-steps", "1", "--output", tmp_path / "d2")
    assert res.code == 0, res.err
    records = [json.loads(x) for x in (tmp_path / "d2" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "ce" in r]
    assert len(train) == 3 and all(r["kd"] > 0 and r["reg"] > 0 for r in train)
    # total = (1 - alpha) ce + alpha kd + lambda reg, as logged at step 1
    r = train[0]
    assert r["loss"] == pytest.approx(0.5 * r["ce"] + 0.5 * r["kd"] + 0.1 * r["reg"], rel=1e-4)


def test_logs_cut_by_a_kill_are_repaired_on_resume(tmp_path):
    from lmdisp.train.callbacks import _truncate_after

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "ce": 2}\n{"step": 2, "ce": 1}\n{"step": 3, "ce": 1}\n{"step": 4, "c')
    _truncate_after(log, 2, lambda ln: json.loads(ln)["step"])
    assert log.read_text() == '{"step": 1, "ce": 2}\n{"step": 2, "ce": 1}\n'
    trace = tmp_path / "condensation.csv"
    trace.write_text("step,layer,layer_fraction,mean_cos\n0,0,0,0.1\n4,0,0,0.2\n8,0")
    _truncate_after(trace, 4, lambda ln: int(ln.split(",")[0]))
    assert trace.read_text() == "step,layer,layer_fraction,mean_cos\n0,0,0,0.1\n4,0,0,0.2\n"


def test_eval_points_warmup_steps_and_lr_floor_reach_the_trainer(tmp_path):
    """eval_points=5: a checkpoint every floor(T/5)+1 steps, all kept (the authors' periodic
    evaluations); warmup_steps and min_lr_ratio give Table 5's schedule (500 steps, floor 0.1x)."""
    from transformers import get_scheduler

    from lmdisp.train.run import training_arguments

    args = training_arguments(tiny(tmp_path, eval_points=5), tmp_path, 1525, 1)
    assert (args.save_steps, args.save_total_limit) == (306, None)
    args = training_arguments(tiny(tmp_path, warmup_steps=500, min_lr_ratio=0.1), tmp_path, 2000, 1)
    assert args.get_warmup_steps(2000) == 500
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    sched = get_scheduler(args.lr_scheduler_type, opt, 500, 2000, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(2000):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[500] == pytest.approx(3e-4) and lrs[-1] == pytest.approx(3e-5, rel=1e-3)
    expected = 3e-5 + (3e-4 - 3e-5) * 0.5 * (1 + math.cos(math.pi * (1250 - 500) / 1500))
    assert lrs[1250] == pytest.approx(expected, rel=1e-6)
