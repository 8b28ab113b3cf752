"""`lmdisp measure` end to end, on tiny random models, a local folder and the bundled SmolLM2."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lmdisp.measure import MeasureConfig, run_measure

FAST = ["--dataset", "builtin", "--repetitions", "3", "--max-length", "48", "--min-words", "64",
        "--max-words", "80"]


def test_cli_several_random_models(run_cli, tmp_path):
    out = tmp_path / "run"
    res = run_cli("measure", "random:tiny-gpt2", "random:tiny-llama", "random:tiny-bert", *FAST,
                  "--metrics", "all", "--save-matrices", "--output", out)
    assert res.code == 0, res.err
    assert "Spearman" in res.out
    table = pd.read_csv(out / "models.csv")
    assert list(table["model"]) == ["random:tiny-gpt2", "random:tiny-llama", "random:tiny-bert"]
    assert (out / "models.md").is_file() and (out / "trend.png").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["repetitions"] == 3 and "git_commit" in manifest and "versions" in manifest
    for sub in ("random-tiny-gpt2", "random-tiny-llama", "random-tiny-bert"):
        layers = pd.read_csv(out / sub / "layers.csv")
        summary = json.loads((out / sub / "summary.json").read_text())
        assert len(layers) == summary["num_layers"] + 1 == 5
        assert {"layer_fraction", "mean_cos", "std_cos", "entropy_mean", "variance_mean",
                "effective_rank"} <= set(layers.columns)
        mats = np.load(out / sub / "matrices.npz")["cossim_by_layer"]
        assert mats.shape == (5, 48, 48)
        np.testing.assert_allclose(layers["mean_cos"], mats.astype(np.float64).mean(axis=(1, 2)), atol=1e-6)
        assert summary["spearman_rho"] == pytest.approx(
            pd.Series(layers["mean_cos"]).corr(pd.Series(range(5)), method="spearman"))
        assert len(summary["mean_last_n_layers"]) == 5
        for key in ("model", "num_params", "corpus", "repetitions", "seq_len", "dtype", "device",
                    "versions", "git_commit", "wall_time_s", "kendall_tau"):
            assert key in summary, key
        assert (out / sub / "heatmap.png").is_file()


def test_python_api_local_folder_and_fixed_texts(tiny_gpt2_dir, tmp_path):
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(" ".join(f"word{i}" for i in range(j, j + 100)) for j in range(3)))
    run = run_measure(MeasureConfig(models=[str(tiny_gpt2_dir)], texts=str(texts), repetitions=4,
                                    max_length=32, results_dir=str(tmp_path / "res"), plots=False,
                                    include_logits=True))
    (item,) = run.models
    assert item.source == "local" and item.num_layers == 3
    assert run.path.parent == tmp_path / "res" / "measure"
    assert item.result.mean_matrices.shape == (4, 32, 32)
    assert item.result.logits_matrix.shape == (32, 32)
    assert item.layers["layer"].iloc[-1] == "logits"
    # never overwrite: a second run gets its own folder
    again = run_measure(MeasureConfig(models=[str(tiny_gpt2_dir)], texts=str(texts), repetitions=1,
                                      max_length=32, results_dir=str(tmp_path / "res"), plots=False))
    assert again.path != run.path and run.path.is_dir()


def test_cli_sites_positions_intervals(run_cli, tmp_path):
    out = tmp_path / "sites"
    res = run_cli("measure", "random:tiny-gpt2", *FAST, "--site", "residual,mlp,attn", "--skip-first", "2",
                  "--metrics", "centred,isoscore,rogue", "--bootstrap", "200", "--save-matrices", "--output", out)
    assert res.code == 0, res.err
    table = pd.read_csv(out / "models.csv")
    assert list(table["site"]) == ["residual", "mlp", "attn"]
    assert (table["rho_ci_low"] <= table["spearman_rho"] + 1e-12).all()
    assert (table["spearman_rho"] <= table["rho_ci_high"] + 1e-12).all()
    sub = out / "random-tiny-gpt2"
    layers = pd.read_csv(sub / "layers.csv")
    assert layers.groupby("site", sort=False).size().to_dict() == {"residual": 5, "mlp": 4, "attn": 4}
    assert {"ci_low", "ci_high", "first_token_cos", "mean_cos_without_first", "centred_mean", "isoscore_mean",
            "rogue_mean", "rogue_ci_low"} <= set(layers.columns)
    assert (layers["ci_low"] <= layers["mean_cos"] + 1e-12).all() and (layers["mean_cos"] <= layers["ci_high"] + 1e-12).all()
    summary = json.loads((sub / "summary.json").read_text())
    assert summary["seq_len"] == 46 and summary["skip_first"] == 2 and summary["site"] == "residual"
    assert set(summary["sites"]) == {"residual", "mlp", "attn"}
    assert len(summary["sites"]["mlp"]["rogue_dims_by_layer"][0]) == 3
    mats = np.load(sub / "matrices.npz")
    assert mats["cossim_by_layer-mlp"].shape == (4, 46, 46)
    positions = pd.read_csv(sub / "positions.csv")
    mlp1 = positions[(positions["site"] == "mlp") & (positions["layer"] == 1)]
    m = mats["cossim_by_layer-mlp"][0].astype(np.float64)
    assert mlp1["mean_cos"].iloc[3] == pytest.approx(np.diagonal(m, 3).mean(), abs=1e-6)
    for name in ("heatmap-mlp.png", "heatmap-attn.png", "heatmap-residual.png", "positions-mlp.png"):
        assert (sub / name).is_file(), name


def test_compare_two_models_adds_cka(run_cli, tmp_path):
    out = tmp_path / "cmp"
    res = run_cli("measure", "random:tiny-gpt2", "random:tiny-gpt2", *FAST, "--site", "hidden,mlp", "--compare",
                  "--output", out)
    assert res.code == 0, res.err
    assert "Linear CKA" in res.out
    cka = pd.read_csv(out / "compare.csv")
    assert len(cka) == 5 + 4 and (out / "cka.png").is_file()
    np.testing.assert_allclose(cka["cka"], 1.0, atol=1e-5)  # the same seed builds the same weights
    assert len(pd.read_csv(out / "models.csv")) == 4


@pytest.mark.slow
def test_bundled_smollm2_condenses(run_cli, tmp_path):
    res = run_cli("measure", "--dataset", "builtin", "--repetitions", "2", "--max-length", "128",
                  "--output", tmp_path / "smol")
    assert res.code == 0, res.err
    summary = json.loads((tmp_path / "smol" / "smollm2-135m" / "summary.json").read_text())
    assert summary["num_layers"] == 30 and summary["num_params"] > 100e6
    assert summary["spearman_rho"] > 0.5, summary["spearman_rho"]  # a small model condenses


@pytest.mark.slow
def test_gguf_file_argument(run_cli, tmp_path, monkeypatch):
    """A .gguf path loads through the same cached conversion as the alias: one folder, one
    tokenizer, and the same measurement."""
    from lmdisp.models import alias_path, classify, gguf_to_folder, load_tokenizer

    gguf = str(alias_path("smollm2-135m"))
    assert classify(gguf)[0] == "gguf"
    assert gguf_to_folder(Path(gguf)) == gguf_to_folder(alias_path("smollm2-135m"))
    assert load_tokenizer(gguf).get_vocab() == load_tokenizer("smollm2-135m").get_vocab()
    means = []
    for spec, out in ((gguf, "by-path"), ("smollm2-135m", "by-alias")):
        res = run_cli("measure", spec, "--dataset", "builtin", "--repetitions", "1", "--max-length", "32",
                      "--no-plots", "--output", tmp_path / out)
        assert res.code == 0, res.err
        (summary,) = (tmp_path / out).glob("*/summary.json")
        means.append(json.loads(summary.read_text())["mean_cos_by_layer"])
    assert means[0] == means[1]


@pytest.mark.parametrize("args, message", [
    (["gpt2-nonexistent-model-xyz"], "bundled offline default"),
    (["random:tiny-gpt2", "--dataset", "builtin", "--min-words", "200000", "--max-words", "200000"],
     "holds only"),
    (["random:tiny-gpt2", "--dataset", "builtin", "--max-length", "300"], "exceeds the 256 positions"),
    (["random:tiny-gpt2", "--dataset", "builtin", "--min-words", "5", "--max-words", "5",
      "--max-length", "64"], "fewer than --max-length"),
    (["--repetitions", "0"], "--repetitions 0: must be >= 1"),
    (["--max-length", "1"], "--max-length 1: must be >= 2"),
    (["--dtype", "float8"], "--dtype"),
    (["--metrics", "foo"], "--metrics"),
    (["--skip-first", "511"], "--skip-first 511 leaves fewer than 2"),
    (["--site", "hidden,hidden"], "listed twice"),
    (["random:tiny-llama", "--dataset", "builtin", "--max-length", "64", "--site", "no.such.module"],
     "matches no module"),
    (["random:tiny-gpt2", "--compare"], "--compare needs exactly two models"),
    (["--bootstrap", "-1"], "--bootstrap -1: must be >= 0"),
    (["--output", ""], "empty folder name"),
    (["--dataset", "imdb"], "cannot load dataset"),
    (["./no/such/folder"], "neither a model folder"),
    (["missing.gguf"], "GGUF file not found"),
])
def test_bad_input_is_one_clear_line(run_cli, args, message):
    res = run_cli("measure", *args)
    assert res.code == 2
    assert message in res.err
    assert "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1, res.err


def test_gguf_that_is_not_a_model(run_cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LMDISP_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    res = run_cli("measure", bad, "--dataset", "builtin")
    assert res.code == 2 and "not a loadable GGUF model" in res.err
    assert "Traceback" not in res.err


def test_output_folder_is_never_overwritten(run_cli, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    res = run_cli("measure", "random:tiny-gpt2", *FAST, "--output", out)
    assert res.code == 2 and "refusing to overwrite" in res.err
    assert (out / "keep.txt").read_text() == "earlier result"


def _remote_code_model(folder: Path, tokenizer, marker: Path) -> Path:
    """A model folder whose config and model classes are custom code that touches `marker`
    when it runs (as a hub repository with `auto_map` would)."""
    from transformers import GPT2Config, GPT2Model

    GPT2Model(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tokenizer), n_positions=64,
                         bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "configuration_remote.py").write_text(
        f"from pathlib import Path\nfrom transformers import GPT2Config\nPath({str(marker)!r}).touch()\n"
        "class RemoteConfig(GPT2Config):\n    model_type = 'remote_gpt2'\n")
    (folder / "modeling_remote.py").write_text(
        "from transformers import GPT2Model\nfrom .configuration_remote import RemoteConfig\n"
        "class RemoteModel(GPT2Model):\n    config_class = RemoteConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="remote_gpt2", auto_map={"AutoConfig": "configuration_remote.RemoteConfig",
                                                      "AutoModel": "modeling_remote.RemoteModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_runs_only_with_trust_remote_code(run_cli, capsys, tmp_path, tiny_tokenizer):
    """A model that needs its own code is refused in one line without running that code;
    `--trust-remote-code` runs it."""
    marker = tmp_path / "remote-code-ran"
    model = _remote_code_model(tmp_path / "remote-model", tiny_tokenizer, marker)
    capsys.readouterr()  # save_pretrained's progress bar
    args = ["measure", model, "--dataset", "builtin", "-r", "2", "--max-length", "16", "--min-words", "40",
            "--max-words", "50", "--no-plots"]
    res = run_cli(*args, "--output", tmp_path / "refused")
    assert res.code == 2 and "Traceback" not in res.err and len(res.err.strip().splitlines()) == 1, res.err
    assert not marker.exists() and not (tmp_path / "refused").exists()
    res = run_cli(*args, "--trust-remote-code", "--output", tmp_path / "trusted")
    assert res.code == 0, res.err
    assert marker.exists() and len(list((tmp_path / "trusted").glob("*/summary.json"))) == 1


def test_hub_revision_spec(monkeypatch):
    """`org/model@revision` reaches from_pretrained as a revision (Figure 4: training checkpoints)."""
    import transformers

    from lmdisp.models import _at_revision, check_model, classify

    assert classify("allenai/OLMo-2@stage1-step1000") == ("hub", "allenai/OLMo-2@stage1-step1000")
    assert _at_revision("allenai/OLMo-2@stage1-step1000") == ("allenai/OLMo-2", {"revision": "stage1-step1000"})
    assert _at_revision("gpt2") == ("gpt2", {})
    seen = {}

    def fake(name, **kw):
        seen.update(name=name, **kw)
        return object()

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    check_model("allenai/OLMo-2@stage1-step1000")
    assert seen["name"] == "allenai/OLMo-2" and seen["revision"] == "stage1-step1000"


def test_dtype_defaults_to_float32_and_auto_is_the_checkpoints_own(tmp_path, tiny_tokenizer):
    """The paper measures in float32 (docs/fidelity.md M11); `--dtype auto` keeps a bf16 checkpoint bf16."""
    import torch
    from transformers import GPT2Config, GPT2Model

    folder = tmp_path / "bf16-model"
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=len(tiny_tokenizer), n_positions=64)
    GPT2Model(cfg).to(torch.bfloat16).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    assert MeasureConfig().dtype == "float32"
    common = dict(models=[str(folder)], dataset="builtin", repetitions=1, max_length=16, min_words=32,
                  max_words=40, plots=False, results_dir=str(tmp_path / "res"), device="cpu")
    default = run_measure(MeasureConfig(**common)).models[0]
    auto = run_measure(MeasureConfig(**common, dtype="auto")).models[0]
    assert (default.summary["dtype"], auto.summary["dtype"]) == ("float32", "bfloat16")
