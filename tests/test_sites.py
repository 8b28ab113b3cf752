"""Sites: the hooked tensors against HF's hidden states and against a direct recomputation of
each block from its input, on tiny random GPT-2, Llama and BERT; several sites in one pass
equal one site per pass; module-name patterns; positions dropped with skip_first."""

import numpy as np
import pytest
import torch

from lmdisp.errors import ConfigError
from lmdisp.measure.config import MeasureConfig
from lmdisp.measure.run import measure_sites
from lmdisp.measure.sites import SiteRecorder, find_blocks
from lmdisp.models import load_model

SPECS = ["random:tiny-gpt2", "random:tiny-llama", "random:tiny-bert"]


@pytest.fixture(scope="module", params=SPECS)
def loaded(request):
    return load_model(request.param, dtype="float32", device="cpu")


def run_sites(model, sites, skip=0, seq=12):
    ids = torch.randint(5, 1000, (2, seq), generator=torch.Generator().manual_seed(0))
    with SiteRecorder(model, sites, skip) as rec, torch.inference_mode():
        out = model(input_ids=ids, output_hidden_states=True)
        acts = rec.collect(out, 2, seq)
    return out, acts, rec.names


def test_residual_equals_hidden_but_the_last(loaded):
    out, acts, _ = run_sites(loaded.model, ["hidden", "residual"])
    hidden, residual = acts["hidden"], acts["residual"]
    assert len(residual) == len(hidden) == 5
    for a, b in zip(hidden[:-1], residual[:-1]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    final_norm = {"gpt2": "ln_f", "llama": "norm"}.get(loaded.model.config.model_type)
    if final_norm:  # the last hidden state is the final norm of the last block's output
        with torch.inference_mode():
            torch.testing.assert_close(hidden[-1], getattr(loaded.model, final_norm)(residual[-1]))
        assert not torch.allclose(hidden[-1], residual[-1])
    else:  # BERT: no final norm, the two agree everywhere
        torch.testing.assert_close(hidden[-1], residual[-1], rtol=0, atol=0)


def test_sublayers_equal_direct_recomputation(loaded):
    model = loaded.model
    _, acts, names = run_sites(model, ["residual", "attn", "mlp"])
    res, attn, mlp = acts["residual"], acts["attn"], acts["mlp"]
    _, blocks = find_blocks(model)
    kind = model.config.model_type
    assert len(attn) == len(mlp) == len(blocks) == 4
    with torch.inference_mode():
        for l, block in enumerate(blocks):
            if kind == "gpt2":  # pre-norm: x + attn(ln_1 x), then + mlp(ln_2 .)
                torch.testing.assert_close(mlp[l], block.mlp(block.ln_2(res[l] + attn[l])))
                torch.testing.assert_close(res[l + 1], res[l] + attn[l] + mlp[l])
            elif kind == "llama":
                torch.testing.assert_close(mlp[l], block.mlp(block.post_attention_layernorm(res[l] + attn[l])))
                torch.testing.assert_close(res[l + 1], res[l] + attn[l] + mlp[l])
            else:  # BERT, post-norm: LN2(mlp + LN1(attn + x)); attn / mlp are the dense outputs
                mid = block.attention.output.LayerNorm(attn[l] + res[l])
                torch.testing.assert_close(mlp[l], block.output.dense(block.intermediate(mid)))
                torch.testing.assert_close(res[l + 1], block.output.LayerNorm(mlp[l] + mid))
    assert names["attn"][0].endswith({"gpt2": "attn", "llama": "self_attn", "bert": "attention.output.dense"}[kind])


def test_pattern_site_and_skip_first(loaded):
    pattern = {"gpt2": "h.*.mlp.c_fc", "llama": "layers.*.mlp.up_proj", "bert": "*.intermediate.dense"}[
        loaded.model.config.model_type]
    _, acts, names = run_sites(loaded.model, [pattern, "hidden"], skip=3)
    assert len(acts[pattern]) == 4 and all(t.shape[:2] == (2, 9) and t.shape[2] in (128, 256) for t in acts[pattern])
    assert all(t.shape[1] == 9 for t in acts["hidden"])
    in_model_order = [n for n, _ in loaded.model.named_modules() if n in set(names[pattern])]
    assert names[pattern] == in_model_order and len(set(names[pattern])) == 4


def test_several_sites_in_one_pass_equal_separate_passes(builtin_texts):
    loaded = load_model("random:tiny-llama", dtype="float32", device="cpu")
    base = dict(repetitions=6, max_length=32, metrics=["rogue", "centred"], skip_first=1)
    together = measure_sites(loaded, builtin_texts, MeasureConfig(site=["mlp", "hidden", "attn"], batch_size=4, **base))
    for site in ("hidden", "mlp", "attn"):
        alone = measure_sites(loaded, builtin_texts, MeasureConfig(site=[site], **base)).results[site]
        np.testing.assert_allclose(together.results[site].mean_matrices, alone.mean_matrices, atol=1e-6)
        np.testing.assert_allclose(together.results[site].extra["rogue"], alone.extra["rogue"], atol=1e-6)
        assert alone.mean_matrices.shape == ((5 if site == "hidden" else 4), 31, 31)


def test_default_site_registers_no_hook():
    loaded = load_model("random:tiny-gpt2", dtype="float32", device="cpu")
    before = hook_count(loaded.model)  # transformers may register its own
    with SiteRecorder(loaded.model, ["hidden"]) as rec:
        assert rec._handles == [] and hook_count(loaded.model) == before
    with SiteRecorder(loaded.model, ["mlp"]):
        assert sum(len(m._forward_hooks) for m in loaded.model.modules()) == before + 4
    assert hook_count(loaded.model) == before


def hook_count(model):
    """Forward hooks on the model, after one plain forward (transformers installs its own on the first)."""
    with torch.inference_mode():
        model(input_ids=torch.tensor([[5, 6, 7]]), output_hidden_states=True)
    return sum(len(m._forward_hooks) for m in model.modules())


def test_bad_sites_are_config_errors():
    model = load_model("random:tiny-gpt2", dtype="float32", device="cpu").model
    before = hook_count(model)
    with pytest.raises(ConfigError, match="matches no module"):
        SiteRecorder(model, ["no.such.*"])
    with pytest.raises(ConfigError, match="not a \\[batch"):  # attention weights are not token vectors
        run_sites(model, ["h.*.attn.attn_dropout"])
    assert hook_count(model) == before
