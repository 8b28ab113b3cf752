"""Where in the model the token vectors are read ("sites"), collected in the same forward pass.

- `hidden` (the default, the paper's and the authors' package's): the L+1 tensors HF returns
  with `output_hidden_states=True`: index 0 the embedding output, 1..L the block outputs, the
  last one after the final norm in most decoder models (GPT-2 `ln_f`, Llama/Qwen/SmolLM2/OLMo
  `norm`; BERT has none). No hook is registered.
- `residual`: the residual stream, all L+1 points comparable: index 0 the embedding output,
  l = 1..L the output of block l-1 read by a forward hook, i.e. before any final norm. It
  equals `hidden` at every index but the last when the model has a final norm.
- `attn`, `mlp`: what each block's attention and MLP sublayers add to the residual stream (the
  output projection, before the residual addition): GPT-2 `attn`/`mlp`, Llama-style
  `self_attn`/`mlp`, BERT-style `attention.output.dense`/`output.dense` (BERT adds them inside
  its post-sublayer LayerNorm). Layer l = 1..L is block l-1, so the layer fraction l/L lines
  up with the residual stream point the block writes to.
- any other text is a module-name pattern (shell-style, `fnmatch`) matched against each module's
  dotted name or a dotted suffix of it, e.g. `layers.*.mlp.act_fn` or `h.*.attn.c_attn`: one
  "layer" per matching module, in model order. Its output must be a [B, S, d] tensor (or a
  tuple whose first item is).

Several sites share one forward pass: forward hooks keep a reference to each output (no copy)
until the batch has been accumulated, then the references are dropped. `skip_first` drops the
first K positions of every site (and of the logits) before any statistic.
"""

from __future__ import annotations

import fnmatch
from typing import Any, Sequence

from lmdisp.errors import ConfigError

BUILTIN_SITES = ("hidden", "residual", "attn", "mlp")
# block-relative module paths, first match wins (BERT's `attention` includes the residual + LN)
_SUBLAYERS = {
    "attn": ("attention.output.dense", "self_attn", "attn", "attention", "self_attention"),
    "mlp": ("mlp", "feed_forward", "ffn", "output.dense"),
}


def find_blocks(model) -> tuple[str, list]:
    """The name and modules of the transformer block list: the first `nn.ModuleList` whose
    length is the number of layers in the model's config."""
    import torch

    config = getattr(model, "config", None)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    n = getattr(text, "num_hidden_layers", None) or getattr(text, "n_layer", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return name, list(module)
    raise ConfigError(f"cannot find the {n} transformer blocks of {type(model).__name__}; "
                      "give a module-name pattern to --site instead")


def resolve_site(model, site: str) -> list[tuple[str, Any]]:
    """The (name, module) pairs a non-`hidden` site reads, in model order."""
    if site in ("residual", "attn", "mlp"):
        prefix, blocks = find_blocks(model)
        if site == "residual":
            return [(f"{prefix}.{i}", b) for i, b in enumerate(blocks)]
        found = []
        for i, block in enumerate(blocks):
            for path in _SUBLAYERS[site]:
                try:
                    found.append((f"{prefix}.{i}.{path}", block.get_submodule(path)))
                    break
                except AttributeError:
                    continue
            else:
                raise ConfigError(f"--site {site}: block {prefix}.{i} of {type(model).__name__} has none of "
                                  f"{', '.join(_SUBLAYERS[site])}; give a module-name pattern instead")
        return found
    matches = [(name, m) for name, m in model.named_modules()
               if name and (fnmatch.fnmatchcase(name, site) or fnmatch.fnmatchcase(name, "*." + site))]
    if not matches:
        raise ConfigError(f"--site {site!r} matches no module of {type(model).__name__} (modules are named "
                          f"like {_example_names(model)}); sites: {', '.join(BUILTIN_SITES)} or a pattern")
    return matches


def _example_names(model) -> str:
    names = [n for n, _ in model.named_modules() if n]
    return ", ".join(names[1:4] if len(names) > 3 else names)


def _first_tensor(output):
    import torch

    if isinstance(output, torch.Tensor):
        return output
    items = output.to_tuple() if hasattr(output, "to_tuple") else output
    if isinstance(items, (tuple, list)):
        for item in items:
            if isinstance(item, torch.Tensor):
                return item
    return None


class SiteRecorder:
    """Registers the hooks a list of sites needs; `collect(out)` returns site -> list of [B, S', d]
    tensors for the batch just run (S' = S - skip_first). Use as a context manager."""

    def __init__(self, model, sites: Sequence[str], skip_first: int = 0):
        self.sites = list(sites)
        self.skip = skip_first
        self.names: dict[str, list[str]] = {}
        self._captured: dict[str, list] = {}
        self._handles = []
        for site in self.sites:
            if site == "hidden":
                self.names[site] = ["hidden_states"]
                continue
            modules = resolve_site(model, site)
            self.names[site] = [n for n, _ in modules]
            self._captured[site] = [None] * len(modules)
            for i, (_, module) in enumerate(modules):
                self._handles.append(module.register_forward_hook(self._hook(site, i)))

    @property
    def needs_hidden_states(self) -> bool:
        return any(s in ("hidden", "residual") for s in self.sites)

    def _hook(self, site: str, index: int):
        def hook(module, inputs, output):
            self._captured[site][index] = _first_tensor(output)
        return hook

    def collect(self, out, batch: int, seq: int) -> dict[str, list]:
        """The batch's tensors per site, first `skip_first` positions dropped; clears the hooks' refs."""
        result = {}
        for site in self.sites:
            if site == "hidden":
                tensors = list(out.hidden_states)
            else:
                tensors = list(self._captured[site])
                self._captured[site] = [None] * len(tensors)
                if site == "residual":
                    tensors = [out.hidden_states[0]] + tensors
                self._check(site, tensors, batch, seq)
            result[site] = [t[:, self.skip:] for t in tensors] if self.skip else tensors
        return result

    def _check(self, site: str, tensors: list, batch: int, seq: int) -> None:
        names = self.names[site]
        for i, t in enumerate(tensors):
            name = names[i - 1] if site == "residual" and i else names[min(i, len(names) - 1)]
            if t is None or t.ndim != 3 or tuple(t.shape[:2]) != (batch, seq):
                shape = None if t is None else tuple(t.shape)
                raise ConfigError(f"--site {site!r}: module {name} gives {shape}, not a [batch, "
                                  f"{seq} tokens, dim] tensor (or did not run)")

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
