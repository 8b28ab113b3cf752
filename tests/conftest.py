"""Shared fixtures. Everything is offline: no model or dataset is fetched from the hub, and
the tests are hermetic: the lmdisp cache (converted GGUF models) goes to a temporary folder,
and the tiny models use the shipped 1024-token `tiny-bpe` tokenizer. Only tests marked
`slow` load the bundled SmolLM2-135M (its GGUF is converted once per session)."""

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MPLBACKEND", "Agg")
# the tests' own lm-eval calls (the references lmdisp is compared with) bootstrap in-process, as lmdisp
# does: no Pool forked from the test process (lmdisp.eval.progress.bootstrap_in_process)
os.environ.setdefault("DISABLE_MULTIPROC", "1")
os.environ["LMDISP_CACHE"] = tempfile.mkdtemp(prefix="lmdisp-test-cache-")
os.environ["HF_MODULES_CACHE"] = tempfile.mkdtemp(prefix="lmdisp-test-modules-")  # remote code

import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """The shipped 1024-token byte-level BPE (`configs/tokenizers/tiny-bpe`)."""
    from lmdisp.models import load_tokenizer

    return load_tokenizer("tiny-bpe")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, tiny_tokenizer):
    """A save_pretrained folder of a tiny random GPT-2 with the tiny tokenizer."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    cfg = GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=len(tiny_tokenizer), n_positions=256,
                     bos_token_id=0, eos_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def builtin_texts():
    from lmdisp.data import load_corpus, sample_texts

    return sample_texts(load_corpus("builtin"), 6, seed=0)


class CliResult:
    def __init__(self, code, out, err):
        self.code, self.out, self.err = code, out, err


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run `lmdisp ...` in-process through the console-script entry point (`lmdisp.cli.main.main`)."""
    from lmdisp.cli.main import main

    def run(*args):
        monkeypatch.setattr(sys, "argv", ["lmdisp", *map(str, args)])
        code = 0
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(autouse=True)
def _smollm2_only_in_slow_tests(request, monkeypatch):
    """Keep the fast tests hermetic: converting the bundled GGUF is for tests marked `slow`."""
    if request.node.get_closest_marker("slow"):
        return
    from pathlib import Path

    import lmdisp.models

    real = lmdisp.models.gguf_to_folder

    def guarded(gguf, *args, **kwargs):
        if Path(gguf).name == lmdisp.models.ALIASES["smollm2-135m"][1]:
            raise AssertionError("this test converts the bundled SmolLM2 GGUF: use a tiny model or mark it slow")
        return real(gguf, *args, **kwargs)

    monkeypatch.setattr(lmdisp.models, "gguf_to_folder", guarded)
