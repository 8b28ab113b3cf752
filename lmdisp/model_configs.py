"""`random:<config>` JSON configs and the small files shipped under `configs/` (model
configs, tokenizers): reading them with one line on what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

from lmdisp.errors import ModelLoadError, first_line

def shipped(kind: str) -> list[str]:
    """Names shipped under configs/<kind>/: tokenizer folders, or model configs (JSON)."""
    from lmdisp.config import packaged

    return sorted(p.name.removesuffix(".json") for p in packaged(kind).iterdir()
                  if p.is_dir() or p.name.endswith(".json"))


def json_config(path: Path, default_tokenizer: str):
    """A `random:` JSON config -> (transformers config, tokenizer spec: its `tokenizer` key, else
    `default_tokenizer`), or one line on what is wrong."""
    import difflib

    from transformers import AutoConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"random config {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except ValueError as exc:  # json.JSONDecodeError
        raise ModelLoadError(f"random config {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ModelLoadError(f"random config {path}: expected a JSON object of config keys")
    tok = data.pop("tokenizer", default_tokenizer)  # lmdisp key: which tokenizer to pair with
    model_type = data.pop("model_type", None)
    if model_type is None:
        raise ModelLoadError(f"random config {path} has no `model_type`")
    if model_type not in CONFIG_MAPPING_NAMES:
        close = difflib.get_close_matches(str(model_type), CONFIG_MAPPING_NAMES, 3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (e.g. gpt2, llama, qwen2)"
        raise ModelLoadError(f"random config {path}: unknown model_type `{model_type}`{hint}")
    try:
        return AutoConfig.for_model(model_type, **data), tok
    except (TypeError, ValueError) as exc:
        raise ModelLoadError(f"random config {path}: {first_line(exc)}") from None
