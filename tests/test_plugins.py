"""Plugins: real packages installed with pip, discovered through entry points.

The packages are installed with ``pip install --target`` into a temporary folder that only the
subprocesses under test see, so the tests never change the environment running them.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO, run_ganzoo

EXAMPLE = REPO / "plugins" / "ganzoo-example-plugin"


def _pip_install(target: Path, *packages: Path) -> None:
    # source folders are built from a private copy: without build isolation setuptools builds in the
    # source tree (build/, *.egg-info), and two test workers installing one plugin at once collided
    import shutil
    import tempfile

    copies = []
    for pkg in packages:
        if Path(pkg).is_dir():
            dest = Path(tempfile.mkdtemp(dir=target.parent if target.parent.exists() else None)) / Path(pkg).name
            shutil.copytree(pkg, dest, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
            pkg = dest
        copies.append(pkg)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--target", str(target), *map(str, copies)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr


def _make_plugin(root: Path, dist: str, namespace: str, body: str) -> Path:
    pkg = dist.replace("-", "_")
    src = root / dist
    (src / pkg).mkdir(parents=True)
    (src / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{dist}"
        version = "0.0.1"
        [project.entry-points."ganzoo.plugins"]
        {namespace} = "{pkg}:register"
        [tool.setuptools]
        packages = ["{pkg}"]
        """))
    (src / pkg / "__init__.py").write_text(textwrap.dedent(body))
    return src


HEADER = """\
from typing import Literal
from torch import nn
from ganzoo.config import BlockConfig
"""

PLUGINS = {
    # name: (namespace, body)
    "zoo-good": ("good", HEADER + """
class GoodConfig(BlockConfig):
    '''A plugin block that works.'''
    type: Literal["good.identity"] = "good.identity"

class Good(nn.Identity):
    '''Identity from a working plugin.'''
    def __init__(self, cfg, channels=0):
        super().__init__()

def register(registry):
    registry.ATTENTION.register(GoodConfig, Good)
"""),
    "zoo-raises-on-import": ("raiser", "raise RuntimeError('boom at import')\n"),
    "zoo-duplicate": ("dup", HEADER + """
class DupConfig(BlockConfig):
    type: Literal["dup.thing"] = "dup.thing"

class OtherConfig(BlockConfig):
    type: Literal["dup.first"] = "dup.first"

def register(registry):
    registry.ATTENTION.register(OtherConfig, nn.Identity)   # rolled back when the next one fails
    registry.ATTENTION.register(DupConfig, nn.Identity)
    registry.ATTENTION.register(DupConfig, nn.Identity)
"""),
    "zoo-shadow": ("shadow", HEADER + """
class NoneConfig(BlockConfig):
    type: Literal["none"] = "none"

def register(registry):
    registry.ATTENTION.register(NoneConfig, nn.Identity)
"""),
    "zoo-missing-method": ("nomap", HEADER + """
class NoMapConfig(BlockConfig):
    type: Literal["nomap.attention"] = "nomap.attention"

class NoMap(nn.Conv2d):  # parameters and a reference, but no attention_map
    reference = nn.Conv2d.forward

def register(registry):
    registry.ATTENTION.register(NoMapConfig, NoMap)
"""),
    "zoo-not-pydantic": ("notpyd", HEADER + """
class NotAModel:
    type = "notpyd.x"

def register(registry):
    registry.LOSS.register(NotAModel, object)
"""),
}


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    srcs = [_make_plugin(root / "src", dist, ns, body) for dist, (ns, body) in PLUGINS.items()]
    site = root / "site"
    _pip_install(site, EXAMPLE, *srcs)
    return site


def _env(site: Path) -> dict:
    return {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}


def test_example_plugin_listed_with_its_distribution(plugin_site):
    out = run_ganzoo("list", "attention", "example.*", env=_env(plugin_site))
    assert out.returncode == 0, out.stderr
    assert "example.linear_attention" in out.stdout
    assert "ganzoo-example-plugin 0.1.0" in out.stdout
    out = run_ganzoo("list", "loss", env=_env(plugin_site))
    assert "example.smoothed_non_saturating" in out.stdout


def test_broken_plugins_warn_once_each_and_the_rest_works(plugin_site):
    out = run_ganzoo("list", "attention", env=_env(plugin_site))
    assert out.returncode == 0, out.stderr
    names = {line.split()[1] for line in out.stdout.splitlines()}
    # the working plugins and the built-ins are there ...
    assert {"good.identity", "example.linear_attention", "none"} <= names
    # ... nothing of a broken plugin stays registered, not even what it registered before failing
    assert not {n for n in names if n.startswith(("dup.", "raiser.", "shadow.", "notpyd.", "nomap."))}
    warnings = [line for line in out.stderr.splitlines() if "PluginWarning" in line]
    # one line each, ganzoo's own format: no file:line prefix, no source line under it
    assert all(line.startswith("ganzoo: PluginWarning: ") for line in out.stderr.splitlines()), out.stderr
    expected = {
        "zoo-raises-on-import": "RuntimeError: boom at import",
        "zoo-duplicate": "already registered by zoo-duplicate 0.0.1",
        "zoo-shadow": "may only register names in its namespace",
        "zoo-not-pydantic": "must be a pydantic model",
        "zoo-missing-method": "attention 'nomap.attention' (zoo-missing-method 0.0.1): missing method "
                              "'attention_map' required by the attention contract",
    }
    for dist, err in expected.items():
        hits = [w for w in warnings if f"from distribution {dist} 0.0.1" in w]
        assert len(hits) == 1, (dist, warnings)
        assert err in hits[0], hits[0]
    assert len(warnings) == len(expected), warnings


def test_ganzoo_check_plugin_runs_the_kit_on_the_example_plugin(plugin_site, tmp_path):
    """What the example plugin's README tells authors to run, from outside any checkout."""
    out = run_ganzoo("check", "--plugin", "ganzoo-example-plugin", cwd=tmp_path, env=_env(plugin_site))
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert {line.split()[2] for line in lines[:-1]} == {"example.linear_attention", "example.smoothed_non_saturating"}
    assert all(line.startswith("PASS") for line in lines[:-1]) and lines[-1].startswith("3 checks: 3 passed")
    # a plugin refused at registration is reported, not silently checked as nothing
    out = run_ganzoo("check", "--plugin", "zoo_missing_method", cwd=tmp_path, env=_env(plugin_site))
    assert out.returncode == 1
    assert out.stdout.startswith("FAIL  plugin  nomap  load") and "missing method 'attention_map'" in out.stdout


def test_ganzoo_check_from_a_wheel_install_with_no_checkout(tmp_path):
    """The issue's acceptance: ganzoo built as a wheel (tests/ is not in it) plus the example plugin,
    run from a folder that is no checkout: the conformance kit ships in the package."""
    import shutil

    src = tmp_path / "src"
    shutil.copytree(REPO / "ganzoo", src / "ganzoo", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    wheels = tmp_path / "wheels"
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                          "--disable-pip-version-check", "-w", str(wheels), str(src)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    wheel = next(wheels.glob("ganzoo-*.whl"))
    site = tmp_path / "site"
    _pip_install(site, wheel, EXAMPLE)
    assert not (site / "tests").exists()
    env = {"PYTHONPATH": str(site)}
    where = subprocess.run([sys.executable, "-c", "import ganzoo; print(ganzoo.__file__)"], cwd=tmp_path,
                           env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
    assert where.stdout.startswith(str(site)), where.stdout + where.stderr
    out = run_ganzoo("check", "--plugin", "ganzoo-example-plugin", cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.splitlines()[-1].startswith("3 checks: 3 passed, 0 failed")


def test_plugin_blocks_validate_in_recipes(plugin_site, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"base: {REPO / 'recipes' / 'quickstart.yaml'}\n"
                      "generator: {attention: {type: example.linear_attention, qk_reduction: 4}}\n"
                      "loss: {type: example.smoothed_non_saturating, real_label: 0.9}\n")
    out = run_ganzoo("validate", str(recipe), "--print", env=_env(plugin_site))
    assert out.returncode == 0, out.stderr
    assert "example.linear_attention" in out.stdout and "real_label: 0.9" in out.stdout
    # the plugin's config validates its fields like any built-in
    out = run_ganzoo("validate", str(recipe), "--set", "loss.real_label=0.2", env=_env(plugin_site))
    assert out.returncode == 2
    assert out.stderr.strip().endswith("loss.real_label: Input should be greater than 0.5")
    # and its names are suggested when misspelt
    out = run_ganzoo("validate", str(recipe), "--set", "loss=example.smoothed_non_saturatin", env=_env(plugin_site))
    assert out.returncode == 2
    assert "did you mean 'example.smoothed_non_saturating'" in out.stderr


def test_schema_includes_plugin_blocks(plugin_site):
    import json

    out = run_ganzoo("schema", env=_env(plugin_site))
    assert out.returncode == 0, out.stderr
    schema = json.loads(out.stdout)
    assert "attention.example.linear_attention" in schema["$defs"]
    assert "loss.example.smoothed_non_saturating" in schema["$defs"]


def test_installed_example_plugin_is_in_this_environment_in_ci():
    """CI installs the example plugin, so the registry-derived property tests cover its blocks."""
    if os.environ.get("CI") != "true":
        pytest.skip("only CI guarantees the example plugin is installed in the test environment")
    from ganzoo.registry import ATTENTION, LOSS

    assert "example.linear_attention" in ATTENTION
    assert "example.smoothed_non_saturating" in LOSS
