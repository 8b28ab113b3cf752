"""Parity with the authors' reference package: lmdisp's streamed mean matrices equal
`embedding_condensation.measure_embedding_condensation(...).cossim_by_layer` on the same
texts, and batching does not change them.

Two models: the bundled SmolLM2-135M (float32, CPU) and a tiny random GPT-2 saved with the
SmolLM2 tokenizer and loaded back through `load_model(<folder>)`. Offline; about 15 s here.
"""

import numpy as np
import pytest

# Installed by `make install` with --no-deps (it pins an old transformers); a missing
# package is a failure here, not a skip: parity is a promise of the tool.
from embedding_condensation import measure_embedding_condensation

from lmdisp.data import load_corpus, sample_texts
from lmdisp.measure.config import MeasureConfig
from lmdisp.measure.run import measure_model
from lmdisp.models import load_model, load_tokenizer

pytestmark = pytest.mark.slow

ATOL = 1e-5
# model -> (repetitions, max_length): small enough to keep the module well under a minute
CASES = {"smollm2-135m": (4, 128), "tiny-gpt2": (6, 64)}


@pytest.fixture(scope="module")
def corpus():
    return load_corpus("builtin")


@pytest.fixture(scope="module")
def smollm2():
    # the first load ever converts the GGUF into the lmdisp cache (~20 s); later ones are fast
    return load_model("smollm2-135m", dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory):
    import torch
    from transformers import GPT2Config, GPT2Model

    folder = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=49152, n_positions=256)
    GPT2Model(config).save_pretrained(folder)
    load_tokenizer("smollm2-135m").save_pretrained(folder)
    return load_model(str(folder), dtype="float32", device="cpu")


@pytest.fixture(scope="module", params=list(CASES))
def measured(request, corpus):
    """lmdisp at batch size 1 and 3, and the authors' package, on the same texts."""
    loaded = request.getfixturevalue("smollm2" if request.param == "smollm2-135m" else "tiny_gpt2")
    repetitions, max_length = CASES[request.param]
    texts = sample_texts(corpus, repetitions, seed=0)

    def ours(batch_size):
        cfg = MeasureConfig(repetitions=repetitions, max_length=max_length, batch_size=batch_size)
        return measure_model(loaded, texts, cfg)

    theirs = measure_embedding_condensation(
        loaded.model, loaded.tokenizer, texts=texts, repetitions=repetitions, max_length=max_length,
        plot=False, save_path=None, show_progress=False)  # both falsy, else it draws a heatmap
    return {"case": request.param, "loaded": loaded, "repetitions": repetitions, "max_length": max_length,
            "bs1": ours(1), "bs3": ours(3), "authors": theirs.cossim_by_layer}


def test_mean_matrices_match_authors(measured):
    ours, theirs = measured["bs1"].mean_matrices, measured["authors"]
    layers = measured["loaded"].num_layers + 1  # embedding output + every block
    assert ours.shape == theirs.shape == (layers, measured["max_length"], measured["max_length"])
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL, err_msg=measured["case"])
    # the summary the paper correlates with depth: the mean of all entries of each M_l
    np.testing.assert_allclose(measured["bs1"].layer_means, theirs.astype(np.float64).mean(axis=(1, 2)),
                               rtol=0, atol=ATOL, err_msg=measured["case"])


def test_batch_size_does_not_change_results(measured):
    one, three = measured["bs1"], measured["bs3"]
    assert one.mean_matrices.shape == three.mean_matrices.shape
    assert one.num_repetitions == three.num_repetitions == measured["repetitions"]
    np.testing.assert_allclose(three.mean_matrices, one.mean_matrices, rtol=0, atol=ATOL,
                               err_msg=measured["case"])
    np.testing.assert_allclose(three.rep_means, one.rep_means, rtol=0, atol=ATOL, err_msg=measured["case"])


def test_rep_means_average_to_layer_means(measured):
    """The O(S d) per-repetition means (||mean z_hat||^2) average to m_l of the mean matrix."""
    result = measured["bs1"]
    np.testing.assert_allclose(result.rep_means.mean(axis=0), result.layer_means, rtol=0, atol=ATOL,
                               err_msg=measured["case"])
