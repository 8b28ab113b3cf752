"""Task names lm-eval knows, and why a task of your own may look unknown.

lm-eval's `TaskManager` indexes every task YAML of its registry and of `--include-path`,
and silently skips a YAML it cannot parse: the task it defines then reads as "unknown".
`broken_task_yaml` finds such files and shows the YAML error instead.
"""

from __future__ import annotations

from pathlib import Path

from lmdisp.errors import ConfigError


def broken_task_yaml(include_path: list[str], names: list[str]) -> None:
    """lm-eval skips a task YAML it cannot parse, so its task looks unknown: show the YAML
    error instead (the file naming the task first, else the first broken file)."""
    import yaml

    class _AnyTag(yaml.SafeLoader):  # lm-eval's own tags (!function ...) are not errors here
        pass

    _AnyTag.add_multi_constructor("!", lambda loader, suffix, node: None)
    broken = []
    for folder in include_path:
        for file in sorted(Path(folder).rglob("*.y*ml")):
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                broken.append((True, f"{file}: cannot read it ({exc}), so lm-eval skipped it"))
                continue
            try:
                yaml.load(text, Loader=_AnyTag)  # noqa: S506 - a SafeLoader subclass
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f", line {mark.line + 1}" if mark is not None else ""
                why = getattr(exc, "problem", None) or str(exc).splitlines()[0]
                broken.append((not any(n in text for n in names), f"{file}{where}: not valid YAML ({why}), so "
                               "lm-eval skipped it"))
    if broken:
        raise ConfigError(sorted(broken)[0][1] + f" (unknown task(s): {', '.join(names)})")


def list_tasks(include_path: list[str], pattern: str = "*") -> list[str]:
    """The task, group and tag names lm-eval knows (with `include_path`), matching a glob."""
    import fnmatch

    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=include_path or None)
    return sorted(n for n in tm.all_tasks if fnmatch.fnmatch(n, pattern or "*"))


def template_problem(exc: BaseException, name: str, include_path: list[str]) -> str | None:
    """A task whose Jinja template names a field its documents do not have (`{{questoin}}`):
    the field, and the YAML file and line that use it (from `include_path`); None for any
    other error."""
    import re

    found = re.fullmatch(r"'([^']+)' is undefined", str(exc).strip())
    if type(exc).__name__ != "UndefinedError" or found is None:
        return None
    field = found.group(1)
    use = re.compile(r"\{[{%][^}]*\b" + re.escape(field) + r"\b")
    where = ""
    for folder in include_path:
        for file in sorted(Path(folder).rglob("*.y*ml")):
            try:
                lines = file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                continue
            hit = next((i for i, line in enumerate(lines) if use.search(line)), None)
            if hit is not None:
                where = f" ({file}, line {hit + 1})"
                break
        if where:
            break
    return (f"task `{name}`: its template uses `{field}`, which is not a field of the task's documents{where}; "
            "correct the name in the task YAML (doc_to_text, doc_to_target, doc_to_choice)")


def hub_data_problem(tm, name: str, exc: BaseException) -> str | None:
    """One line for a task whose data could not be fetched from the hub (`lmdisp.hub`), naming
    the task and its `dataset_path`; None when the failure is not the hub's."""
    import re

    from lmdisp.hub import hub_problem

    problem = hub_problem(exc, "dataset")
    if problem is None:
        return None
    entry = (getattr(tm, "task_index", None) or {}).get(name)
    yaml_path = entry.get("yaml_path") if isinstance(entry, dict) else getattr(entry, "yaml_path", None)
    found = None
    if isinstance(yaml_path, (str, Path)) and Path(yaml_path).is_file():
        found = re.search(r"^dataset_path:\s*['\"]?([^\s'\"]+)", Path(yaml_path).read_text(), re.M)
    dataset = f" (dataset `{found[1]}`)" if found else ""
    return f"cannot load the data of task `{name}`{dataset}: {problem}"
