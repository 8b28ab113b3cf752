"""What this machine can give a training run, checked at start: a precision or a distribution
it cannot give is refused in one line, never silently replaced (issue 14 point 5).

- `--precision fp16` needs a GPU: on a CPU accelerate turns autocast off and trains in fp32
  (the manifest would record fp16). bf16 is honoured on a CPU (CPU autocast) and refused on a
  GPU without bf16.
- FSDP or DeepSpeed asked for through `accelerate launch --config_file ...` (accelerate's
  `ACCELERATE_USE_FSDP` / `ACCELERATE_USE_DEEPSPEED`) but not what the process group became
  (e.g. on CPUs, where accelerate falls back to plain data parallelism).
"""

from __future__ import annotations

import os

from lmdisp.errors import ConfigError

_SHARDING = (("ACCELERATE_USE_FSDP", "FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DEEPSPEED", "DeepSpeed"))


def check_machine(precision: str, state, command: str = "midtrain") -> None:
    """Refuse `precision` or a requested sharding that accelerate's `state` cannot give."""
    import torch

    device = state.device.type
    for env, kind, name in _SHARDING:
        if os.environ.get(env, "false").lower() == "true" and state.distributed_type.value != kind:
            raise ConfigError(
                f"{name} was requested by the accelerate config, but this machine runs {state.num_processes} "
                f"process(es) on {device} as {state.distributed_type.value}, where {name} cannot run; launch with configs/accelerate/ddp.yaml, or run `lmdisp {command}` "
                "without accelerate")
    if precision == "fp16" and device == "cpu":
        raise ConfigError("--precision fp16 needs a GPU (on a CPU it would silently train in fp32); use "
                          "--precision fp32, or bf16 (CPU autocast)")
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("--precision bf16: this GPU has no bf16 support; use --precision fp16 or fp32")
