"""Recipes: every shipped recipe validates; inheritance, overrides and one-line errors (exit 2)."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, run_ganzoo
from ganzoo.cli import main
from ganzoo.errors import RecipeError
from ganzoo.recipe import apply_overrides, deep_merge, dump_recipe, load_raw, load_recipe, validate

RECIPES = sorted((REPO / "recipes").rglob("*.yaml"))
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


@pytest.mark.parametrize("path", RECIPES, ids=[str(p.relative_to(REPO / "recipes")) for p in RECIPES])
def test_shipped_recipes_validate_and_round_trip(path):
    recipe = load_recipe(path)
    again = validate(yaml.safe_load(dump_recipe(recipe)), "dumped")
    assert again == recipe


def test_there_are_recipes():
    names = {str(p.relative_to(REPO / "recipes")) for p in RECIPES}
    assert {"quickstart.yaml", "sagan.yaml", "imagenet128/sagan.yaml"} <= names


def test_deep_merge_merges_mappings_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 1}
    over = {"a": {"c": [3]}, "e": 2}
    assert deep_merge(base, over) == {"a": {"b": 1, "c": [3]}, "d": 1, "e": 2}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 1}  # inputs untouched


def test_base_inheritance_chain(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {QUICKSTART}\nname: a\ntrain: {{steps: 7}}\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("base: ../a.yaml\nname: b\nseed: 5\n")
    r = load_recipe(tmp_path / "sub" / "b.yaml")
    q = load_recipe(QUICKSTART)
    assert (r.name, r.seed, r.train.steps) == ("b", 5, 7)
    assert r.train.batch_size == q.train.batch_size and r.generator == q.generator


def test_overrides_parse_yaml_values_and_expand_block_shorthand():
    data = {"generator": {"attention": "sagan"}, "train": {"steps": 1}}
    out = apply_overrides(data, ["train.steps=12", "train.g_optim.betas=[0.5, 0.9]",
                                 "generator.attention.qk_reduction=4"])
    assert out["train"]["steps"] == 12 and out["train"]["g_optim"]["betas"] == [0.5, 0.9]
    assert out["generator"]["attention"] == {"type": "sagan", "qk_reduction": 4}
    assert data["train"]["steps"] == 1


def test_override_changes_a_block(tmp_path):
    r = load_recipe(QUICKSTART, ["generator.attention=none", "train.steps=3"])
    assert r.generator.attention.type == "none" and r.train.steps == 3


def _errors(tmp_path, capsys, text: str | bytes, *extra: str) -> list[str]:
    path = tmp_path / "bad.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    code = main(["validate", str(path), *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert err, "no error printed"
    for line in err:
        assert line.startswith(str(path) + ": ") or line.startswith("--set: "), line
        assert "Traceback" not in line
    return [line.split(": ", 1)[1] for line in err]


BASE = f"base: {QUICKSTART}\n"

CASES = {
    "unknown-top-level-key": (BASE + "bogus: 1\n", "bogus: unknown field (not allowed here)"),
    "unknown-nested-key": (BASE + "train: {stepz: 3}\n", "train.stepz: unknown field (not allowed here)"),
    "wrong-type": (BASE + "train: {steps: many}\n", "train.steps: Input should be a valid integer"),
    "zero-size": (BASE + "train: {batch_size: 0}\n", "train.batch_size: Input should be greater than or equal to 1"),
    "negative-lr": (BASE + "train: {g_optim: {lr: -1}}\n", "train.g_optim.lr: Input should be greater than 0"),
    "bad-beta": (BASE + "train: {d_optim: {lr: 1.0e-4, betas: [0, 1.5]}}\n", "train.d_optim.betas: each beta must be in [0, 1)"),
    "typo-in-block-name": (BASE + "generator: {attention: sagn}\n",
                           "generator.attention.type: unknown attention 'sagn'; did you mean 'sagan'?"),
    "typo-in-loss": (BASE + "loss: hinj\n", "loss.type: unknown loss 'hinj'; did you mean 'hinge'?"),
    "block-field-error": (BASE + "generator: {attention: {type: sagan, qk_reduction: 0}}\n",
                          "generator.attention.qk_reduction: Input should be greater than or equal to 1"),
    "block-not-a-mapping": (BASE + "loss: 3\n", "loss: expected a loss name or a mapping with a 'type' key, got int"),
    "bad-yaml": ("name: [unclosed\n", "invalid YAML: line 2, column 1"),
    "tabs-yaml": ("name:\n\t- x\n", "invalid YAML"),
    "not-utf8": (b"name: \xff\xfe\n", "not UTF-8 text (byte 6)"),
    "empty": ("", "empty recipe"),
    "only-comments": ("# nothing\n", "empty recipe"),
    "top-level-list": ("- a\n- b\n", "a recipe must be a mapping of fields, got list"),
    "python-tag": ("name: !!python/object/apply:os.system ['echo hi']\n", "invalid YAML"),
    "missing-base": ("base: nowhere.yaml\n", "base: base recipe 'nowhere.yaml' not found"),
    "bad-base-type": ("base: [1]\n", "base: must be a path to another recipe"),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_malformed_recipes_give_one_line_naming_the_field(case, tmp_path, capsys):
    text, expected = CASES[case]
    errors = _errors(tmp_path, capsys, text)
    assert len(errors) == 1, errors
    assert errors[0].startswith(expected), errors


def test_several_problems_are_all_reported(tmp_path, capsys):
    errors = _errors(tmp_path, capsys, BASE + "bogus: 1\ntrain: {steps: 0, batch_size: x}\n")
    assert len(errors) == 3, errors


def test_cyclic_base(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(RecipeError, match=r"base: cyclic base: a.yaml -> b.yaml -> a.yaml"):
        load_raw(tmp_path / "a.yaml")
    errors = _errors(tmp_path, capsys, "base: bad.yaml\n")
    assert errors == ["base: cyclic base: bad.yaml -> bad.yaml"]


def test_missing_file(capsys, tmp_path):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert capsys.readouterr().err.strip() == f"{tmp_path / 'nope.yaml'}: file not found"


def test_bad_override(tmp_path, capsys):
    assert main(["validate", str(QUICKSTART), "--set", "train.steps"]) == 2
    assert capsys.readouterr().err.strip() == "--set: 'train.steps' is not of the form path.to.field=value"
    assert main(["validate", str(QUICKSTART), "--set", "train.steps=-4"]) == 2
    assert "train.steps: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_cross_field_attention_resolution_must_exist(tmp_path, capsys):
    errors = _errors(tmp_path, capsys, BASE + "generator: {attention_resolutions: [3]}\n")
    assert errors[0].startswith("generator.attention_resolutions"), errors


def test_validate_print_shows_the_resolved_recipe(capsys):
    assert main(["validate", str(QUICKSTART), "--print"]) == 0
    out = capsys.readouterr().out
    resolved = yaml.safe_load(out)
    assert resolved == load_recipe(QUICKSTART).model_dump(mode="json")
    assert "base" not in resolved


def test_cli_exit_code_and_no_traceback_in_a_real_process(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BASE + "generator: {attention: sagn}\n")
    out = run_ganzoo("validate", str(bad))
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines() == [
        f"{bad}: generator.attention.type: " + out.stderr.split("generator.attention.type: ", 1)[1].strip()
    ]
    assert "did you mean 'sagan'" in out.stderr
