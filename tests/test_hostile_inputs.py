"""Hostile inputs (issue 17): files that are not recipes, special files, terminal escape codes, numbers
and names too large to use, plugins fighting over a namespace, slow start-up, unwritable report
outputs. Each ends in a one-line error naming the file (and field), exit 2, no traceback, nothing
lost -- or, for plugins, one warning; every test here failed on the code before the fix."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_ganzoo, tiny_recipe
from ganzoo.cli import main

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
ESC = "\x1b"


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error(code: int, err: str, source: str | Path) -> str:
    """Exit 2 with exactly one printable line that starts with ``SOURCE: ``; returns the line."""
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, lines
    assert "Traceback" not in err
    assert ESC not in err and "\x07" not in err, repr(err)
    assert lines[0].startswith(f"{source}: "), lines[0]
    return lines[0]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def on_quickstart(path: Path, extra: str) -> Path:
    return write(path, f"base: {QUICKSTART}\n{extra}")


# ----------------------------------------------------------------------------- special and foreign files
CHILD = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # the old code read /dev/zero until out of memory
from ganzoo.errors import RecipeError
from ganzoo.recipe import load_raw
try:
    load_raw(sys.argv[1])
except RecipeError as exc:
    print(exc)
    sys.exit(2)
print("loaded")
"""


def _load_in_child(path: Path) -> subprocess.CompletedProcess:
    """load_raw in a child with 2 GiB of address space and 60 s: a FIFO that blocks the reader or a
    device that never ends fails the test instead of hanging or exhausting the machine."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", CHILD, str(path)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("case", ["dev_zero", "yaml_link_to_dev_zero", "fifo", "base_fifo", "base_dev_zero"])
def test_special_files_are_refused_before_they_are_read(tmp_path, case):
    if case == "dev_zero":
        path = Path("/dev/zero")
    elif case == "yaml_link_to_dev_zero":
        path = tmp_path / "zero.yaml"
        path.symlink_to("/dev/zero")
    elif case == "fifo":
        path = tmp_path / "pipe.yaml"
        os.mkfifo(path)
    else:
        special = tmp_path / "pipe.yaml"
        if case == "base_fifo":
            os.mkfifo(special)
        else:
            special = Path("/dev/zero")
        path = write(tmp_path / "recipe.yaml", f"name: x\nbase: {special}\n")
    try:
        out = _load_in_child(path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case}: reading the recipe blocked (a FIFO or device was opened)")
    assert out.returncode == 2, (out.stdout, out.stderr[-2000:])
    assert "not a regular file" in out.stdout or "not a recipe file" in out.stdout, out.stdout
    assert out.stdout.startswith(f"{path}: ")


def test_recipes_larger_than_1_mib_are_refused_and_libyaml_parses(tmp_path, capsys):
    from ganzoo import recipe

    path = on_quickstart(tmp_path / "big.yaml", "# padding\n" * 120_000)  # 1.2 MB of comments
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert "too large" in line
    if yaml.__with_libyaml__:  # a 10 MB recipe took 169 s in the pure-Python parser
        assert issubclass(recipe._Loader, yaml.CSafeLoader)


@pytest.mark.parametrize("case", ["base_txt", "base_yaml", "recipe_yaml", "directory"])
def test_files_that_are_not_recipes_are_refused_without_echoing_their_content(tmp_path, capsys, case):
    secret = "SECRET_TOKEN_a1b2c3: 1\nroot_password_hash: x\n"
    if case == "base_txt":
        write(tmp_path / "secret.txt", secret)
        path = write(tmp_path / "r.yaml", "name: x\nbase: secret.txt\n")
    elif case == "base_yaml":
        write(tmp_path / "secret.yaml", secret)
        path = write(tmp_path / "r.yaml", "name: x\nbase: secret.yaml\n")
    elif case == "recipe_yaml":
        path = write(tmp_path / "secret.yaml", secret)
    else:
        path = tmp_path / "folder.yaml"
        path.mkdir()
    source = tmp_path / "secret.yaml" if case == "base_yaml" else path  # the file that is not a recipe
    line = one_error(*cli(capsys, "validate", path)[::2], source)
    assert "SECRET_TOKEN" not in line and "root_password" not in line, line
    expect = {"base_txt": "base: ", "base_yaml": "not a ganzoo recipe", "recipe_yaml": "not a ganzoo recipe",
              "directory": "is a directory"}[case]
    assert expect in line, line


def test_unknown_keys_are_named_only_when_they_are_short_identifiers(tmp_path, capsys):
    path = on_quickstart(tmp_path / "r.yaml", 'train:\n  "\\e]0;owned\\a\\e[2J": 1\n')
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert "train.'\\x1b]0;owned\\x07\\x1b[2J': unknown field" in line, line
    path = on_quickstart(tmp_path / "r.yaml", f"train:\n  {'k' * 500}: 1\n")
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert "train.<key of 500 characters>: unknown field" in line and "k" * 100 not in line, line


# ----------------------------------------------------------------------------- terminal escape codes
def test_control_characters_in_messages_are_escaped(tmp_path, capsys):
    path = on_quickstart(tmp_path / "r.yaml", 'loss: "\\e[2J\\e]0;pwned\\ahinj"\n')
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert "\\x1b[2J\\x1b]0;pwned\\x07hinj" in line, line
    # the file name itself, in the error and in argparse's own errors
    odd = tmp_path / f"odd{ESC}[31m\u202e.yaml"
    code, _, err = cli(capsys, "validate", odd)
    assert code == 2 and ESC not in err and "\u202e" not in err and "odd\\x1b[31m\\u202e.yaml: file not found" in err
    with pytest.raises(SystemExit) as exc:
        main(["validate", "--set"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and ESC not in err


@pytest.mark.parametrize("name", [f"run{ESC}[31m", "a\rb", "a\nb", "evil\u202eexe.yaml", "tab\there", "x\x00y"])
def test_names_with_control_characters_are_refused(tmp_path, capsys, name):
    from ganzoo.config import check_run_name
    from ganzoo.errors import RecipeError

    path = write(tmp_path / "r.yaml", f"base: {QUICKSTART}\nname: {json.dumps(name)}\n")
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert line.startswith(f"{path}: name: must not contain control characters"), line
    if name.isprintable() or "\t" in name or ESC in name:  # YAML folds a plain scalar's line breaks to spaces
        code, _, err = cli(capsys, "validate", QUICKSTART, "--set", f"name={name}")
        assert code == 2 and "name: must not contain control characters" in err and ESC not in err
    with pytest.raises(RecipeError, match="control characters"):
        check_run_name(name, "--name", "")  # what `ganzoo run --name` calls


def test_run_refuses_a_name_with_control_characters_and_creates_no_folder(tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", yaml.safe_dump(tiny_recipe(train={"steps": 1, "batch_size": 4})))
    code, _, err = cli(capsys, "run", recipe, "--out", tmp_path / "runs", "--name", f"x{ESC}[31m", "--device", "cpu")
    assert code == 2 and "control characters" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


# ----------------------------------------------------------------------------- numbers
HUGE = "9" * 5000


@pytest.mark.parametrize("where, args, field, message", [
    ("yaml", f"train: {{steps: {HUGE}}}\n", "train.steps", "integer too large"),
    ("set", f"train.steps={HUGE}", "train.steps", "integer too large"),
    ("set", "train.steps=0x" + "f" * 300, "train.steps", "integer too large"),
    ("set", f"data.num_images={2**64}", "data.num_images", "integer too large"),
    ("set", "train.g_optim.weight_decay=1e308", "train.g_optim.weight_decay", "number too large"),
    ("yaml", "train: {d_optim: {weight_decay: 1.0e+200}}\n", "train.d_optim.weight_decay", "number too large"),
    ("set", "train.time_limit_minutes=.inf", "train.time_limit_minutes", "must be a finite number"),
    ("set", "train.ema.start=-99999999999999999999999", "train.ema.start", "integer too large"),
])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_numbers_too_large_to_use_are_one_line_field_errors(tmp_path, capsys, where, args, field, message, command):
    if where == "yaml":
        path, extra = on_quickstart(tmp_path / "r.yaml", args), []
    else:
        path, extra = QUICKSTART, ["--set", args]
    runs = tmp_path / "runs"
    argv = [command, path, *extra] + (["--out", runs, "--device", "cpu"] if command == "run" else [])
    line = one_error(*cli(capsys, *argv)[::2], path)
    assert line.startswith(f"{path}: {field}: {message}"), line
    assert not runs.exists()


def test_config_models_bound_numbers_for_python_callers_too():
    from pydantic import ValidationError

    from ganzoo.recipe import OptimConfig, TrainConfig, validate

    with pytest.raises(ValidationError, match="integer too large"):
        TrainConfig(steps=2**63)
    with pytest.raises(ValidationError, match="must be a finite number"):
        OptimConfig(lr=1e-4, weight_decay=float("inf"))
    with pytest.raises(ValidationError, match="number too large"):
        OptimConfig(lr=1e-4, weight_decay=1e13)
    assert OptimConfig(lr=1e-4, weight_decay=1e12).weight_decay == 1e12  # the bound itself is usable
    with pytest.raises(Exception, match="generator.ch: integer too large"):
        validate(tiny_recipe(generator={"ch": 2**70}, train={"steps": 1}))


def test_yaml_alias_bombs_are_refused_quickly(tmp_path, capsys):
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]  # 10**9 values
    bomb = "\n".join(f"  {line}" for line in lines)
    path = on_quickstart(tmp_path / "bomb.yaml", f"anchors:\n{bomb}\ngenerator: {{attention_resolutions: *a8}}\n")
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert "too many values" in line, line


# ----------------------------------------------------------------------------- long paths and names
def test_paths_and_names_too_long_for_the_file_system_are_one_line_errors(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", f"name: x\nbase: {'b' * 300}.yaml\n")
    line = one_error(*cli(capsys, "validate", path)[::2], path)
    assert line.startswith(f"{path}: base: ") and "too long" in line and "b" * 200 not in line, line
    long_recipe = tmp_path / ("r" * 300 + ".yaml")
    code, _, err = cli(capsys, "validate", long_recipe)
    assert code == 2 and "too long" in err and "Traceback" not in err
    for name, expect in (("é" * 150, "too long for a run folder name"), ("a/b", "cannot be a run folder name"),
                         ("..", "cannot be a run folder name")):
        path = on_quickstart(tmp_path / "n.yaml", f"name: {name}\n")
        line = one_error(*cli(capsys, "validate", path)[::2], path)
        assert line.startswith(f"{path}: name: ") and expect in line, line
    # run refuses the long name before any folder is made (it was an ENAMETOOLONG traceback)
    path = on_quickstart(tmp_path / "n.yaml", f"name: {'é' * 150}\n")
    line = one_error(*cli(capsys, "run", path, "--out", tmp_path / "runs", "--device", "cpu")[::2], path)
    assert "too long for a run folder name" in line and not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- plugins
def _fake_distribution(site: Path, dist: str, namespace: str) -> None:
    """An installed distribution as importlib.metadata sees it (a .dist-info folder), no pip."""
    module = dist.replace("-", "_")
    info = site / f"{module}-0.0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
    (info / "entry_points.txt").write_text(f"[ganzoo.plugins]\n{namespace} = {module}:register\n")
    (site / f"{module}.py").write_text(textwrap.dedent(f"""\
        from typing import Literal
        from torch import nn
        from ganzoo.config import BlockConfig

        class Config(BlockConfig):
            type: Literal["{namespace}.from_{module}"] = "{namespace}.from_{module}"

        class Block(nn.Identity):  # a parameter-free attention block: the attention contract holds
            '''registered by {dist} \\x1b]0;title\\x07\\x1b[2J'''
            def __init__(self, cfg, channels=0):
                super().__init__()

        def register(registry):
            registry.ATTENTION.register(Config, Block)
        """))


def test_two_distributions_claiming_one_namespace_are_both_reported_and_neither_wins(tmp_path):
    site = tmp_path / "site"
    _fake_distribution(site, "zoo-first", "shared")
    _fake_distribution(site, "zoo-second", "shared")
    _fake_distribution(site, "zoo-alone", "alone")
    out = run_ganzoo("list", "attention", env={"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}, timeout=300)
    assert out.returncode == 0, out.stderr
    names = {line.split()[1] for line in out.stdout.splitlines()}
    assert "alone.from_zoo_alone" in names and "none" in names
    assert not {n for n in names if n.startswith("shared.")}, names
    warnings = [line for line in out.stderr.splitlines() if "PluginWarning" in line]
    assert len(warnings) == 1, out.stderr
    assert "zoo-first 0.0.1" in warnings[0] and "zoo-second 0.0.1" in warnings[0] and "'shared'" in warnings[0]
    # a plugin's docstring is printed with its control characters escaped
    assert "registered by zoo-alone \\x1b]0;title\\x07\\x1b[2J" in out.stdout and ESC not in out.stdout


# ----------------------------------------------------------------------------- start-up
def _imports(*args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "ganzoo", *args], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300)
    mods = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    return out, mods


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["run", "--help"], ["validate", "--help"],
                                  ["run", "--set"], ["validate"], ["nope"], ["sampel", "x"], []])
def test_help_and_argument_errors_do_not_import_torch(args):
    out, mods = _imports(*args)
    assert mods, out.stderr[-2000:]
    assert "torch" not in mods, f"ganzoo {' '.join(args)} imported torch"
    assert out.returncode == (0 if args and args[-1] in ("--help", "--version") else 2), out.stderr[-2000:]
    if args == ["--help"]:
        for command in ("list", "validate", "schema", "run", "eval", "sample", "export", "ablate", "report"):
            assert f"    {command} " in out.stdout, out.stdout


def test_run_without_a_recipe_does_not_import_torch():
    out, mods = _imports("run")
    assert out.returncode == 2 and "RECIPE" in out.stderr
    assert "torch" not in mods


# ----------------------------------------------------------------------------- report outputs
@pytest.fixture
def run_folder(tmp_path) -> Path:
    run = tmp_path / "tiny-s0"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml.safe_dump(tiny_recipe(train={"steps": 2})))
    (run / "metrics.jsonl").write_text('{"step": 2, "speed/img_per_s": 10.0}\n')
    return run


@pytest.mark.parametrize("case", ["out_is_a_directory", "out_not_md", "under_a_file", "assets_hold_user_files",
                                  "notes_missing", "notes_is_a_fifo"])
def test_report_outputs_that_cannot_be_written_are_one_line_errors_and_nothing_is_lost(
        tmp_path, capsys, run_folder, case):
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "precious.txt").write_text("data")
    extra: list = []
    if case == "out_is_a_directory":
        out = tmp_path / "keep.md"
        out.mkdir()
        (out / "inside.txt").write_text("data")
        keep = out
    elif case == "out_not_md":
        out = keep  # the old code deleted the folder it was given
    elif case == "under_a_file":
        (tmp_path / "file.txt").write_text("x")
        out = tmp_path / "file.txt" / "sub" / "r.md"
    elif case == "assets_hold_user_files":
        out = tmp_path / "keep.md"  # its image folder is keep/, which a report replaces
    else:
        out = tmp_path / "r.md"
        notes = tmp_path / "notes.txt"
        if case == "notes_is_a_fifo":
            os.mkfifo(notes)
        extra = ["--notes", notes]
    code, _, err = cli(capsys, "report", run_folder, "--out", out, "--no-paper-table", *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert (keep / ("inside.txt" if case == "out_is_a_directory" else "precious.txt")).read_text() == "data"
    if case.startswith("notes"):
        assert "notes" in lines[0] and not out.exists()
