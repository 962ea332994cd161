"""Hypothesis-generated malformed recipes: every one ends with exit code 2, one-line messages that
name the file (and the field, where there is one), no traceback, and no run folder created."""
from __future__ import annotations

import copy
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REPO
from ganzoo.cli import main
from ganzoo.recipe import load_raw

QUICKSTART = REPO / "recipes" / "quickstart.yaml"
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def _valid() -> dict:
    return load_raw(QUICKSTART)


def _paths(node, prefix=()):
    """Every (path, value) in a nested mapping, leaves and inner mappings alike."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield (*prefix, k), v
            yield from _paths(v, (*prefix, k))


def _set(data: dict, path: tuple, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


def _check(tmp_path: Path, capsys, content: bytes, field: str | None, command: str = "validate") -> None:
    path = tmp_path / "recipe.yaml"
    path.write_bytes(content)
    out = tmp_path / "runs"
    argv = ["validate", str(path)] if command == "validate" else ["run", str(path), "--out", str(out), "--device", "cpu"]
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, (content[:300], captured.err)
    assert lines, "no message"
    for line in lines:
        assert line.startswith(f"{path}: "), line
        assert "Traceback" not in line
    if field is not None:
        assert any(line.startswith(f"{path}: {field}") for line in lines), (field, lines)
    assert not out.exists() or not any(out.iterdir()), "a run folder was created for a bad recipe"


leaf_paths = [p for p, v in _paths(_valid()) if not isinstance(v, dict)]
map_paths = [()] + [p for p, v in _paths(_valid()) if isinstance(v, dict)]
junk_key = st.text(string.ascii_lowercase + "_", min_size=3, max_size=12).map(lambda s: f"zz_{s}")


@SETTINGS
@given(where=st.sampled_from(map_paths), key=junk_key, value=st.one_of(st.integers(), st.text(max_size=5)))
def test_unknown_keys(tmp_path_factory, capsys, where, key, value):
    data = copy.deepcopy(_valid())
    node = data
    for k in where:
        node = node[k]
    if isinstance(node, str):  # block shorthand: expand so the key lands inside the block
        return
    node[key] = value
    tmp = tmp_path_factory.mktemp("r")
    _check(tmp, capsys, yaml.safe_dump(data).encode(), ".".join((*where, key)))


def _wrong_type(value):
    if isinstance(value, bool):
        return st.sampled_from(["maybe", [1], {"a": 1}])
    if isinstance(value, (int, float)):
        return st.sampled_from(["lots", [1, 2], {"x": 1}, "1e"])
    if isinstance(value, str):
        return st.sampled_from([[1, 2], 12.5, True]) if value else st.sampled_from([[1], {"q": 1}])
    if isinstance(value, list):
        return st.sampled_from(["notalist", {"a": 1}]) if value else st.sampled_from([{"a": 1}])
    return st.just({"zz": 1})


@SETTINGS
@given(data=st.data(), path=st.sampled_from(leaf_paths))
def test_wrong_types(tmp_path_factory, capsys, data, path):
    valid = _valid()
    value = valid
    for k in path:
        value = value[k]
    if path[-1] in ("name", "description"):  # free text: 12.5 would be a valid name after coercion? no: strict str
        pass
    bad = data.draw(_wrong_type(value))
    tmp = tmp_path_factory.mktemp("r")
    _check(tmp, capsys, yaml.safe_dump(_set(valid, path, bad)).encode(), ".".join(path))


NUMERIC_LIMITS = {
    ("resolution",): [0, 3, -32, 100000],
    ("seed",): [-1, 2**40],
    ("num_classes",): [-1],
    ("channels",): [0, 7],
    ("train", "steps"): [0, -5],
    ("train", "batch_size"): [0, -64],
    ("train", "d_steps"): [0, 1000],
    ("train", "accumulate"): [0, 1000],
    ("train", "g_optim", "lr"): [0, -1e-4, 5.0],
    ("train", "d_optim", "lr"): [0, -4e-4],
    ("train", "g_optim", "betas"): [[0.0, 1.0], [-0.1, 0.9], [0.5]],
    ("train", "ema", "decay"): [1.0, -0.5],
    ("train", "log_every"): [0],
    ("train", "checkpoint_every"): [0, -1],
    ("train", "keep_last"): [0],
    ("eval", "num_samples"): [0, 1],
    ("generator", "ch"): [0, -8],
    ("discriminator", "ch"): [0],
}


@SETTINGS
@given(item=st.sampled_from([(p, v) for p, vs in NUMERIC_LIMITS.items() for v in vs]))
def test_out_of_range_numbers(tmp_path_factory, capsys, item):
    path, bad = item
    tmp = tmp_path_factory.mktemp("r")
    _check(tmp, capsys, yaml.safe_dump(_set(_valid(), path, bad)).encode(), ".".join(path))


BLOCK_FIELDS = [("data",), ("generator",), ("discriminator",), ("loss",), ("regularizer",), ("generator", "attention"),
                ("discriminator", "attention"), ("generator", "norm"), ("generator", "weight_norm")]


@SETTINGS
@given(path=st.sampled_from(BLOCK_FIELDS), name=st.text(string.ascii_letters + "_.-", min_size=1, max_size=15))
def test_unknown_block_names(tmp_path_factory, capsys, path, name):
    from ganzoo.registry import REGISTRIES

    if any(name in reg for reg in REGISTRIES.values()):
        return
    tmp = tmp_path_factory.mktemp("r")
    _check(tmp, capsys, yaml.safe_dump(_set(_valid(), path, {"type": name})).encode(), ".".join(path) + ".type")


@SETTINGS
@given(text=st.text(min_size=0, max_size=40), opener=st.sampled_from(["[", "{", "'", '"', "&a", "*b", ": :", "- a\nb: c", "\t"]))
def test_broken_yaml(tmp_path_factory, capsys, text, opener):
    content = f"name: q\nresolution: {opener}{text}\n".encode()
    try:
        parsed = yaml.safe_load(content)
        if isinstance(parsed, dict) and parsed.get("resolution") is None:
            pass
    except yaml.YAMLError:
        parsed = None
    tmp = tmp_path_factory.mktemp("r")
    # parsed or not, this can never be a valid recipe (no data/generator/...): exit 2 either way
    _check(tmp, capsys, content, None)


@SETTINGS
@given(prefix=st.binary(max_size=30), bad=st.sampled_from([b"\xff", b"\xc3\x28", b"\xe2\x82", b"\xfe\xfe", b"\x80"]))
def test_non_utf8_bytes(tmp_path_factory, capsys, prefix, bad):
    tmp = tmp_path_factory.mktemp("r")
    content = prefix.replace(b"\xff", b"") + bad + QUICKSTART.read_bytes()
    try:
        content.decode("utf-8")
        return  # hypothesis found a prefix that completes the sequence: not a non-UTF-8 case
    except UnicodeDecodeError:
        pass
    _check(tmp, capsys, content, None)


@pytest.mark.parametrize("content", [b"", b"   \n\n", b"# only a comment\n", b"---\n", b"null\n", b"~\n", b"[]\n",
                                     b"42\n", b"just a string\n", b"- 1\n- 2\n"])
def test_empty_and_non_mapping_files(tmp_path, capsys, content):
    _check(tmp_path, capsys, content, None)


@pytest.mark.parametrize("depth", [50, 2000, 20000])
@pytest.mark.parametrize("style", ["flow_list", "block_map", "flow_map"])
def test_huge_nesting(tmp_path, capsys, depth, style):
    if style == "flow_list":
        body = "[" * depth + "]" * depth
    elif style == "flow_map":
        body = "{a: " * depth + "1" + "}" * depth
    else:
        body = "".join(f"{'  ' * i}k{i}:\n" for i in range(min(depth, 3000))) + "  " * min(depth, 3000) + "1"
        _check(tmp_path, capsys, f"base: {QUICKSTART}\nextra:\n".encode() + "".join(
            "  " + line + "\n" for line in body.splitlines()).encode(), None)
        return
    _check(tmp_path, capsys, f"base: {QUICKSTART}\ntrain: {body}\n".encode(), None)


@pytest.mark.parametrize("length", [1, 2, 5])
def test_cyclic_bases(tmp_path, capsys, length):
    for i in range(length):
        (tmp_path / f"r{i}.yaml").write_text(f"base: r{(i + 1) % length}.yaml\nname: r{i}\n")
    code = main(["validate", str(tmp_path / "r0.yaml")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cyclic base" in err[0] and "base:" in err[0], err


def test_python_object_tags_are_refused_not_executed(tmp_path, capsys):
    marker = tmp_path / "pwned"
    content = f"name: !!python/object/apply:os.system ['touch {marker}']\n".encode()
    _check(tmp_path, capsys, content, None)
    assert not marker.exists()
    content = b"!!python/object/new:os.system [echo]\n"
    _check(tmp_path, capsys, content, None)


@SETTINGS
@given(path=st.sampled_from(leaf_paths))
def test_bad_recipes_create_no_run_folder(tmp_path_factory, capsys, path):
    tmp = tmp_path_factory.mktemp("r")
    _check(tmp, capsys, yaml.safe_dump(_set(_valid(), path, {"zz_bad": [1]})).encode(), ".".join(path), command="run")
