"""Models, tokenizers, devices and the cache that cannot work are refused in one line, exit 2,
before any work and with nothing left behind (measure, training, evaluate)."""

from pathlib import Path

import pytest

TRAIN = ["--dataset", "builtin", "--context-length", "32", "--batch-size", "4", "--grad-accum", "1",
         "--train-tokens", "128", "--no-gradient-checkpointing", "--condensation-every", "0"]
MEASURE = ["--dataset", "builtin", "--repetitions", "2", "--max-length", "32", "--min-words", "64",
           "--max-words", "80", "--no-plots"]
EVALUATE = ["--tasks", "arc_easy", "--limit", "2"]


def _one_line(res, *needles):
    assert res.code == 2, (res.code, res.out, res.err)
    assert len(res.err.strip().splitlines()) == 1 and "Traceback" not in res.err, res.err
    for needle in needles:
        assert needle in res.err, res.err


def _gpt2_folder(folder: Path, vocab_size: int, tokenizer=None) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=vocab_size, n_positions=64,
                               bos_token_id=0, eos_token_id=0)).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def nothing_left(tmp_path, monkeypatch):
    """Run in an empty folder; afterwards it must hold only what the test made."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield work
    assert sorted(p.name for p in work.rglob("*")) == [], "files left behind"


def test_a_model_folder_without_tokenizer_files_is_one_line(run_cli, tmp_path, nothing_left, capsys):
    bare = _gpt2_folder(tmp_path / "bare", 1024)
    capsys.readouterr()
    msg = f"`{bare}` has no tokenizer files"
    _one_line(run_cli("measure", bare, *MEASURE, "-o", "m"), msg, "--tokenizer")
    _one_line(run_cli("midtrain", "--model", bare, *TRAIN, "--output", "t"), msg)
    _one_line(run_cli("evaluate", "--model", bare, *EVALUATE, "--output", "e"), msg)


def test_a_teacher_with_another_vocabulary_is_refused_before_training(run_cli, tmp_path, tiny_tokenizer,
                                                                     nothing_left, monkeypatch, capsys):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lmdisp.train.config import TrainConfig
    from lmdisp.train.distill import check_teacher

    words = ["[UNK]", *sorted({w for w in "the a of and to in is it that for on with as was by".split()})]
    word_level = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    other = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]")
    teacher = _gpt2_folder(tmp_path / "teacher", 1100, other)  # rows enough for the student's 1024 ids
    capsys.readouterr()
    import lmdisp.models

    monkeypatch.setattr(lmdisp.models, "load_model", lambda *a, **k: pytest.fail("weights loaded"))
    res = run_cli("distill", "--model", "random:tiny-gpt2", "--teacher", teacher, *TRAIN, "--output", "d")
    _one_line(res, f"--teacher {teacher}: its tokenizer ({len(words)} tokens) is not the student's",
              "id by id", "choose a teacher of the student's family")
    # the same tokenizer with a padded embedding matrix (more rows than tokens) is a valid teacher
    same = _gpt2_folder(tmp_path / "same", 1100, tiny_tokenizer)
    check_teacher(TrainConfig(teacher=str(same)), "random:tiny-gpt2", tiny_tokenizer)


def test_an_unwritable_cache_is_one_line(run_cli, tmp_path, nothing_left, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("LMDISP_CACHE", str(tmp_path / "file" / "cache"))  # unwritable even for root
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    _one_line(run_cli("midtrain", "--model", "random:tiny-gpt2", *TRAIN, "--output", "t"),
              "cannot write the cache folder", "set LMDISP_CACHE, or --set cache_dir=, to a folder you can write")
    _one_line(run_cli("measure", fake, *MEASURE, "-o", "m"), "cannot write the cache folder", "set LMDISP_CACHE")
    _one_line(run_cli("evaluate", "--model", fake, *EVALUATE, "--output", "e"), "cannot write the cache folder")


@pytest.mark.parametrize("device, name", [("mps", "MPS (Apple GPU)"), ("xpu", "XPU (Intel GPU)")])
def test_a_device_the_machine_lacks_is_one_line(run_cli, device, name, nothing_left):
    from lmdisp.machine import device_available

    if device_available(device):
        pytest.skip(f"this machine has {device}")
    _one_line(run_cli("measure", "random:tiny-gpt2", *MEASURE, "--device", device, "-o", "m"),
              f"--device {device}: {name} is not available on this machine; use --device cpu")
    _one_line(run_cli("evaluate", "--model", "random:tiny-gpt2", *EVALUATE, "--device", device, "--output", "e"),
              f"--device {device}: {name} is not available")


def test_model_and_tokenizer_typos_say_what_to_type(run_cli, nothing_left):
    _one_line(run_cli("measure", "random:tiny-gtp2", *MEASURE, "-o", "m"),
              "random:tiny-gtp2: no shipped config `tiny-gtp2` (did you mean random:tiny-gpt2?) (shipped: ",
              "tiny-gpt2, tiny-llama)", "no hub config of that name in the local cache")
    _one_line(run_cli("measure", "random:tiny-gpt2", "--tokenizer", "/nonexistent", *MEASURE, "-o", "m"),
              "tokenizer `/nonexistent`: no such folder; pass a model or tokenizer folder, a hub id or a shipped "
              "tokenizer (tiny-bpe)")
