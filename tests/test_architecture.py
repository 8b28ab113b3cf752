"""The seams: one typed config path for every command, options declared once, the package's
import graph and size rules, the package as users install it (a wheel), and the docs that
describe it (README commands parse against the CLI, make targets exist, every module is in the
layout, every cited file exists)."""

import ast
import dataclasses
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lmdisp.config import field_default, load_config, parse_sets
from lmdisp.errors import ConfigError
from lmdisp.eval.config import EvaluateConfig
from lmdisp.eval.report import ReportConfig
from lmdisp.measure.config import MeasureConfig
from lmdisp.train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent
CONFIGS = {"measure": MeasureConfig, "midtrain": TrainConfig, "pretrain": TrainConfig, "distill": TrainConfig,
           "evaluate": EvaluateConfig, "report": ReportConfig}


# ----------------------------------------------------------------------------- typed values

def test_values_are_converted_to_the_fields_type(tmp_path):
    (tmp_path / "c.yaml").write_text('lr: 1e-4\nlora: "false"\ngradient_checkpointing: "no"\nseed: "3"\n')
    cfg = load_config(TrainConfig, tmp_path / "c.yaml", ["loss=dispersion", "tau=5e-1", "eval_limit=null", "train_tokens=50k"])
    assert cfg.lr == 1e-4 and isinstance(cfg.lr, float)          # PyYAML reads 1e-4 as a string
    assert cfg.lora is False and cfg.gradient_checkpointing is False and cfg.seed == 3
    assert cfg.tau == 0.5 and cfg.eval_limit is None and cfg.train_tokens == 50_000
    m = load_config(MeasureConfig, None, ["metrics=entropy,variance"], {"repetitions": 2})
    assert m.metrics == ["entropy", "variance"] and m.repetitions == 2


@pytest.mark.parametrize("cls, sets, message", [
    (TrainConfig, ["seed=1.5"], "--set seed=1.5: expected an integer"),
    (TrainConfig, ["batch_size=true"], "--set batch_size=True: expected an integer"),
    (TrainConfig, ["lr=fast"], "--set lr=fast: expected a number"),
    (TrainConfig, ["lora=maybe"], "--set lora=maybe: expected a boolean"),
    (TrainConfig, ["learning_rate=1"], "expected key=value with key one of"),
    (MeasureConfig, ["repetitions=many"], "--set repetitions=many: expected an integer"),
])
def test_bad_values_name_the_option_the_type_and_the_value(cls, sets, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_config(cls, None, sets)


def test_yaml_errors_name_the_file_and_key(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: lr: expected a number > 0, got \[1, 2\]"):
        load_config(TrainConfig, tmp_path / "c.yaml")
    (tmp_path / "u.yaml").write_text("learning_rate: 1\n")
    with pytest.raises(ConfigError, match="unknown key.*learning_rate.*valid keys: .*lr"):
        load_config(TrainConfig, tmp_path / "u.yaml")


def test_precedence_and_conflicts(tmp_path):
    (tmp_path / "c.yaml").write_text("tau: 0.5\nseed: 3\nloss: dispersion\n")
    cfg = load_config(TrainConfig, tmp_path / "c.yaml", ["tau=0.7"], {"seed": 9})
    assert (cfg.loss, cfg.tau, cfg.seed) == ("dispersion", 0.7, 9)     # defaults < YAML < --set < flags
    with pytest.raises(ConfigError, match="--seed and --set seed= both given"):
        load_config(TrainConfig, None, ["seed=2"], {"seed": 9})


def test_named_configs_and_saved_configs_replay(run_cli, tmp_path):
    assert load_config(TrainConfig, "gpt2-dispersion", kind="midtrain").loss == "dispersion"
    with pytest.raises(ConfigError, match="--config 'nope': no such named config; choose one of"):
        load_config(TrainConfig, "nope", kind="midtrain")
    args = ["random:tiny-gpt2", "--dataset", "builtin", "--repetitions", "2", "--max-length", "32",
            "--min-words", "64", "--max-words", "80", "--no-plots"]
    assert run_cli("measure", *args, "--output", tmp_path / "a").code == 0
    saved = tmp_path / "a" / "config.yaml"
    assert yaml.safe_load(saved.read_text())["repetitions"] == 2
    res = run_cli("measure", "--config", saved, "--output", tmp_path / "b")  # a replay: same config
    assert res.code == 0, res.err
    a, b = (json.loads(next((tmp_path / x).glob("*/summary.json")).read_text()) for x in "ab")
    assert a["mean_cos_by_layer"] == b["mean_cos_by_layer"] and b["repetitions"] == 2


# ----------------------------------------------------------------------------- one source per option

def _click_params(command: str) -> dict:
    import typer.main

    from lmdisp.cli.main import app

    click_app = typer.main.get_command(app)
    return {p.name: p for p in click_app.commands[command].params}, click_app.commands[command]


@pytest.mark.parametrize("command", list(CONFIGS))
def test_every_field_is_reachable_and_help_shows_its_default(command):
    from lmdisp.cli.options import _shown_default

    params, click_cmd = _click_params(command)
    epilog = click_cmd.epilog or ""
    for field in dataclasses.fields(CONFIGS[command]):
        meta, only = field.metadata, field.metadata.get("commands")
        visible = not only or command in only
        if meta["cli"] == "fixed":  # set by the command (evaluate's --preset is its named config)
            assert (field.name not in params or (command, field.name) == ("evaluate", "preset")) and f"\n{field.name} = " not in f"\n{epilog}"
        elif meta["cli"] in ("flag", "arg") and visible:
            assert field.name in params, field.name
            if meta["cli"] == "flag" and _shown_default(field_default(field)):  # plainly: [default: gpt2]
                assert f"\\[default: {_shown_default(field_default(field))}]" in params[field.name].help, field.name
        elif meta["cli"] == "set" and visible:
            assert f"{field.name} = {field_default(field)!r}" in epilog.replace("\\[", "["), field.name
        else:  # another command's option: neither a flag nor listed
            assert field.name not in params and f"{field.name} = " not in epilog
        assert meta["help"], f"{field.name} has no help"
    assert {"config", "set_"} <= set(params)


def test_distill_options_belong_to_distill_alone():
    assert "teacher" in _click_params("distill")[0]
    for command in ("midtrain", "pretrain"):
        params, cmd = _click_params(command)
        assert "teacher" not in params and "distill_alpha" not in (cmd.epilog or "")


def test_help_is_instant_and_imports_no_heavy_library():
    code = "import sys, lmdisp.cli.main; print(sorted(m for m in ('torch', 'transformers', 'datasets', " \
           "'lm_eval', 'pandas', 'pydantic') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------- the tree

def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((REPO / "lmdisp").rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((REPO / "cli").glob("*.py")):
        out["lmdisp.cli" + ("" if path.stem == "__init__" else f".{path.stem}")] = path
    return out


def _imports(path: Path) -> set[str]:
    """Every lmdisp module a file imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmdisp"):
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("lmdisp"))
    return names


def test_import_graph_has_no_cycle_and_eval_never_imports_train():
    modules = _modules()
    graph = {m: {i for i in _imports(p) if i in modules and i != m} for m, p in modules.items()}
    for module, deps in graph.items():
        if module.startswith("lmdisp.eval"):
            assert not any(d.startswith("lmdisp.train") for d in deps), (module, deps)
        if module.startswith("lmdisp.measure"):
            assert not any(d.startswith(("lmdisp.train", "lmdisp.eval")) for d in deps), (module, deps)
        if not module.startswith(("lmdisp.cli", "lmdisp.__main__")):
            assert not any(d.startswith("lmdisp.cli") for d in deps), (module, deps)
    # no cycle among modules (a package's __init__ re-exporting its own modules does not count)
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for d in graph[m]:
            if m.startswith(d + "."):
                continue
            assert state.get(d) != 1, f"import cycle: {' -> '.join([*path, d])}"
            if d not in state:
                visit(d, [*path, d])
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m, [m])


def test_files_and_functions_stay_small():
    for path in _modules().values():
        source = path.read_text()
        assert len(source.splitlines()) <= 400, f"{path} has {len(source.splitlines())} lines"
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                assert length <= 60, f"{path}:{node.lineno} {node.name} has {length} lines"


def test_library_never_prints():
    for module, path in _modules().items():
        if module.startswith("lmdisp.cli"):
            continue
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert not calls, f"{path}:{calls[0].lineno} prints"


# ----------------------------------------------------------------------------- the wheel

def test_wheel_installs_and_runs_outside_the_checkout(tmp_path):
    """Build the wheel, install it into a fresh venv (its dependencies come from this
    environment's site-packages through a .pth file, so no download), then run it from
    another folder: `cli` and the configs come from inside the package."""
    import sysconfig
    import zipfile

    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("lmdisp-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not any(n.startswith("cli/") for n in names)
    assert "lmdisp/cli/main.py" in names and "lmdisp/configs/eval/paper.yaml" in names
    assert "lmdisp/configs/models/tiny-gpt2.json" in names and "lmdisp/configs/tokenizers/tiny-bpe/tokenizer.json" in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--ignore-installed", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": ""}
    where = subprocess.run([str(py), "-c", "import lmdisp, lmdisp.cli.main; print(lmdisp.__file__)"], cwd=work,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert str(site) in where
    res = subprocess.run([str(venv / "bin" / "lmdisp"), "measure", "random:tiny-gpt2", "--dataset", "builtin",
                          "--repetitions", "2", "--max-length", "32", "--min-words", "64", "--max-words", "80",
                          "--no-plots", "-o", "out"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (work / "out" / "random-tiny-gpt2" / "summary.json").is_file()
    code = "from lmdisp.eval import load_evaluate_config; print(len(load_evaluate_config('paper').tasks))"
    res = subprocess.run([str(py), "-m", "lmdisp", "evaluate", "--help"], cwd=work, env=env, capture_output=True,
                         text=True)
    assert res.returncode == 0 and "--preset" in res.stdout
    out = subprocess.run([str(py), "-c", code], cwd=work, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "10"


def test_trainer_args_pass_any_training_argument_through(tmp_path):
    from lmdisp.train.run import training_arguments

    cfg = load_config(TrainConfig, None, ["trainer_args={optim: sgd, lr_scheduler_type: linear, "
                                          "dataloader_num_workers: 2}"])
    args = training_arguments(cfg, tmp_path, max_steps=10, world_size=1)
    assert (args.optim, args.lr_scheduler_type, args.dataloader_num_workers) == ("sgd", "linear", 2)
    assert args.learning_rate == cfg.lr                                  # lmdisp's own fields stay
    with pytest.raises(ConfigError, match="trainer_args: no_such_field not a TrainingArguments field"):
        training_arguments(load_config(TrainConfig, None, ["trainer_args={no_such_field: 1}"]), tmp_path, 10, 1)
    with pytest.raises(ConfigError, match="--set trainer_args=oops: expected"):
        load_config(TrainConfig, None, ["trainer_args=oops"])


# ----------------------------------------------------------------------------- the docs

README = REPO / "README.md"
_SHELL_OPS = {"|", "||", "&&", ";", ">", ">>", "<", "&"}


def _readme_shell_lines() -> list[str]:
    """Every line of the README's bash code blocks, continuations joined."""
    blocks = re.findall(r"```(?:bash|sh|shell|console)\n(.*?)```", README.read_text(), re.S)
    return [line for block in blocks for line in block.replace("\\\n", " ").splitlines() if line.strip()]


def _segments(line: str) -> list[list[str]]:
    """A shell line's simple commands (split at | && ; > ...), leading VAR=value dropped."""
    out, current = [], []
    for token in [*shlex.split(line, comments=True), ";"]:
        if token in _SHELL_OPS:
            while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                current.pop(0)
            if current:
                out.append(current)
            current = []
        else:
            current.append(token)
    return out


def readme_commands() -> tuple[list[list[str]], list[list[str]]]:
    """(the arguments of every `lmdisp ...` call, also behind `-m lmdisp`; every `make ...` call)."""
    lmdisp, make = [], []
    for line in _readme_shell_lines():
        for seg in _segments(line):
            if seg[0] == "make":
                make.append(seg[1:])
            elif seg[0] == "lmdisp":
                lmdisp.append([t for t in seg[1:] if t != "..."])
            elif "lmdisp" in seg and seg[seg.index("lmdisp") - 1] == "-m":
                lmdisp.append([t for t in seg[seg.index("lmdisp") + 1:] if t != "..."])
    return lmdisp, make


def parse_command(args: list[str]):
    """Parse `lmdisp ARGS` with the real CLI, running nothing: every option must exist and every
    value convert to its type (click's make_context); `--set` keys must be fields of the
    command's config and their values convert to the fields' types."""
    import typer.main

    from lmdisp.cli.main import app

    command, ctx, name = typer.main.get_command(app), None, "lmdisp"
    while hasattr(command, "get_command"):  # a group (Typer vendors click: no isinstance)
        ctx = command.context_class(command, info_name=name, parent=ctx)
        name, args = (args[0], args[1:]) if args else ("", [])
        command = command.get_command(ctx, name)
        if command is None:
            raise LookupError(f"no such command {name!r}")
    sub = command.make_context(name, list(args), parent=ctx)
    if sub.params.get("set_") and name in CONFIGS:  # keys exist, values convert (cross-field rules aside)
        parse_sets(list(sub.params["set_"]), CONFIGS[name])
    return name, sub.params


def test_readme_lmdisp_commands_parse_against_the_cli():
    commands, _ = readme_commands()
    assert len(commands) > 20, commands  # the extraction found the README's examples
    seen = set()
    for args in commands:
        try:
            name, params = parse_command(args)
        except Exception as exc:  # click's UsageError/BadParameter, ConfigError
            pytest.fail(f"README: `lmdisp {shlex.join(args)}` does not parse: {exc}")
        seen.add(name)
        for value in (params.get("config"), params.get("preset")):  # shipped configs the README names
            if value and value.startswith("configs/"):
                assert (REPO / value).is_file(), f"README: `lmdisp {shlex.join(args)}`: {value} does not exist"
    assert {"measure", "midtrain", "evaluate", "report"} <= seen


def test_parse_command_refuses_what_the_cli_refuses():
    for bad in (["measure", "--no-such-option"], ["measure", "--repetitions", "many"], ["no-such-command"],
                ["midtrain", "--set", "learning_rate=1"], ["midtrain", "--loss"]):
        with pytest.raises(Exception):
            parse_command(bad)
    assert parse_command(["measure", "gpt2", "--repetitions", "3"])[1]["repetitions"] == 3


def test_readme_make_targets_exist():
    _, calls = readme_commands()
    assert len(calls) > 10, calls
    for args in calls:
        res = subprocess.run(["make", "-n", *[a for a in args if a not in ("-s", "-n")]], cwd=REPO,
                             capture_output=True, text=True)
        assert res.returncode == 0, f"README: `make {shlex.join(args)}`: {res.stderr.strip()}"


def test_readme_says_what_make_demo_runs():
    said = re.search(r"`make demo` runs `lmdisp ([^`]*)`", README.read_text())
    assert said, "the README says which command `make demo` runs"
    res = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True)
    (line,) = [ln for ln in res.stdout.splitlines() if re.search(r"(^|/| )lmdisp measure", ln)]
    tokens = shlex.split(line)
    runs = tokens[next(i for i, t in enumerate(tokens) if t.endswith("lmdisp")) + 1:]
    assert shlex.split(said.group(1)) == runs


def test_readme_layout_names_every_module():
    layout = re.search(r"## Layout\n+```\n(.*?)```", README.read_text(), re.S).group(1)
    sections, current = {}, None
    for line in layout.splitlines():
        if line and not line[0].isspace():
            current = line.split()[0]
        sections[current] = sections.get(current, "") + line + "\n"
    missing = []
    for path in sorted([*(REPO / "lmdisp").rglob("*.py"), *(REPO / "cli").glob("*.py")]):
        rel = path.relative_to(REPO)
        if path.name in ("__init__.py", "__main__.py"):
            continue
        if str(rel) in layout:
            continue
        section = sections.get(f"{rel.parent}/", "")
        if not re.search(rf"(^|[\s,(]){re.escape(path.name)}\b", section):
            missing.append(str(rel))
    assert not missing, f"README layout does not name: {missing}"


_REPO_DIRS = ("lmdisp/", "cli/", "configs/", "tests/", "bench/", "docs/")


def test_docs_cite_only_files_in_the_repository():
    """README.md and docs/*.md: every relative link exists, and every backticked repository path
    of the README (placeholders such as `<run>` or globs aside; docs/fidelity.md also cites the
    authors' files, and tests/test_fidelity_doc.py checks its lmdisp side); none cites the audit
    that is not in the repository, or a path on this machine."""
    bad = []
    for doc in [README, *sorted((REPO / "docs").glob("*.md"))]:
        text = doc.read_text()
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not re.match(r"[a-z]+://", link) and not (doc.parent / link).exists():
                bad.append(f"{doc.name}: link {link}")
        for ref in re.findall(r"`([^`\s]+)`", text) if doc == README else []:  # fidelity.md: test_fidelity_doc
            path = ref.split(":")[0].rstrip(".,;")
            if path.startswith(_REPO_DIRS) and not re.search(r"[<>*{}\[\]$]", path) and not (REPO / path).exists():
                bad.append(f"{doc.name}: {ref}")
        bad += [f"{doc.name}: cites {m}" for m in re.findall(r"FIDELITY\.md|/work/\S+", text)]
    code = [p for d in ("lmdisp", "cli", "tests", "bench", "configs") for p in (REPO / d).rglob("*")
            if p.suffix in (".py", ".yaml", ".md")] + [REPO / "Makefile"]
    bad += [f"{p.relative_to(REPO)}: cites the audit, not docs/fidelity.md" for p in code
            if re.search(r"FIDELITY\.md", p.read_text())]
    assert not bad, bad
