"""Rule-based rewards for `lmdisp grpo` (TRL's reward-function signature:
`fn(completions, **columns) -> list[float]`; a completion is a string, or a list of chat
messages whose last one is the model's).

    answer        1.0 when the last number in the completion equals the row's `answer` column
                  (`23 + 45 = 68` and `The answer is 68.` both count)
    length:N      -|words - N| / N: 0 at exactly N words
    regex:PAT     1.0 when the completion matches PAT (re.search)
"""

from __future__ import annotations

import re
from typing import Callable

from lmdisp.errors import ConfigError

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def completion_text(completion) -> str:
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    return str(completion)


def last_number(text: str) -> str | None:
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def answer_reward(completions, answer=None, **_) -> list[float]:
    if answer is None:
        raise ConfigError("reward `answer` needs an `answer` column in the dataset")
    return [float(last_number(completion_text(c)) == str(a).strip()) for c, a in zip(completions, answer)]


def _length(target: int) -> Callable:
    def length_reward(completions, **_) -> list[float]:
        return [-abs(len(completion_text(c).split()) - target) / target for c in completions]
    return length_reward


def _regex(pattern: str) -> Callable:
    compiled = re.compile(pattern)

    def regex_reward(completions, **_) -> list[float]:
        return [float(bool(compiled.search(completion_text(c)))) for c in completions]
    return regex_reward


def reward_functions(spec: str) -> list[Callable]:
    """`answer,length:20` -> the reward functions; ConfigError naming the bad item."""
    out = []
    for item in [s.strip() for s in str(spec).split(",") if s.strip()]:
        kind, _, arg = item.partition(":")
        if kind == "answer" and not arg:
            out.append(answer_reward)
        elif kind == "length" and arg.isdigit() and int(arg) > 0:
            out.append(_length(int(arg)))
        elif kind == "regex" and arg:
            try:
                out.append(_regex(arg))
            except re.error as exc:
                raise ConfigError(f"--reward {item}: not a regular expression ({exc})") from None
        else:
            raise ConfigError(f"--reward {item!r}: use answer, length:N (N >= 1 words) or regex:PATTERN")
    if not out:
        raise ConfigError("--reward: give at least one of answer, length:N, regex:PATTERN")
    return out
