"""Docs that must match the code: README's set-up commands, CI's test command, the recipe reference."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text()


def _bash_blocks(text: str) -> list[str]:
    """The bodies of the ```bash fenced blocks of a Markdown text, in order."""
    return re.findall(r"```bash\n(.*?)```", text, re.S)


def _readme_commands() -> list[str]:
    blocks = _bash_blocks(README)
    assert blocks, "README has no bash block"
    return [line for line in blocks[0].splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert README.index("```bash") < README.index("\n## ") if "\n## " in README else True
    assert "ganzoo run recipes/quickstart.yaml" in cmds[0]
    assert "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    assert _readme_commands()[1] in ci.splitlines()


def test_recipe_reference_is_up_to_date():
    out = subprocess.run(
        [sys.executable, "-m", "ganzoo", "schema", "--format", "markdown"], capture_output=True, text=True,
        env={**os.environ, "GANZOO_DISABLE_PLUGINS": "1"}, cwd=REPO, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    current = (REPO / "docs" / "recipes.md").read_text()
    assert current == out.stdout, (
        "docs/recipes.md is stale: regenerate with "
        "GANZOO_DISABLE_PLUGINS=1 ganzoo schema --format markdown > docs/recipes.md"
    )


@pytest.mark.parametrize("page, runs, notes, title, paper_table, needle", [
    # the 10-minute target (issue 16): the current recipe, two seeds, grouped by folder name
    # with running and with standing statistics, and the long run (issue 16's no-collapse target)
    ("results.md", [f"quality/runs/sagan10-{w}-s{s}" for w in ("h100", "h100b", "standing") for s in (0, 1)]
     + ["quality/runs/long-s0", "quality/runs/long2-s0", "quality/runs/long3-s0"],
     "quality/runs/NOTES-10min.md", "SAGAN on CIFAR-10: 10 minutes on one GPU", False,
     "| 100000 | 11.17 | 11.07 |"),
    # the ablation (issue 6): every variant, both seeds
    ("ablations/cifar10.md", [f"ablations/runs/ablation-{v}-s{s}" for v in
                              ("feat16", "feat32", "feat8", "none", "residual16", "residual32", "residual8")
                              for s in (0, 1)], "ablations/runs/NOTES.md",
     "Where should attention go? SAGAN ablation on CIFAR-10", True, "| 5600 | 31.29 ± 4.90 |"),
    # the collapse diagnosis and the recipe that replaced it (issue 16): runs grouped by folder name
    ("quality/collapse.md", [f"quality/runs/{r}" for r in ("fast-s0", "graph-s0", "cand-s0", "cand-s1", "sagan10-s0")],
     "quality/runs/NOTES.md", "Why SAGAN collapsed on CIFAR-10, and the recipe that replaced it", False,
     "| 40000 | 202.59 | 32.02 |"),
    # "which attention block?" (issue 20): every finished run of the study, each block's speed beside its FID
    ("ablations/attention-variants.md",
     sorted(f"ablations/attention-variants-runs/{p.name}"
            for p in (REPO / "docs" / "ablations" / "attention-variants-runs").glob("attn-*")),
     "ablations/attention-variants-runs/NOTES.md", "Which attention block? SAGAN on CIFAR-10", False,
     "| attn-global_context | `global_context` | 14.39 ± 0.49 | 1.36 ms / 0.41 GiB |"),
])
def test_results_pages_are_regenerated_from_the_committed_runs(tmp_path, page, runs, notes, title, paper_table, needle):
    """docs/results.md, docs/quality/collapse.md, docs/ablations/cifar10.md and attention-variants.md are
    `ganzoo report` output over the run folders kept in docs/: regenerating them from those files gives the same
    text (up to the output path in links and the command line). The attention-variants page takes every finished
    run of its study, so a window's runs committed without the page regenerated fail here."""
    from ganzoo.reporting import build_report

    dirs = [REPO / "docs" / r for r in runs]
    quality = runs[0].startswith("quality/")
    committed = (REPO / "docs" / page).read_text()
    out = tmp_path / Path(page).name
    build_report(dirs, out, command=["ganzoo", "report", *map(str, dirs), "--out", str(out)],
                 title=title, notes=(REPO / "docs" / notes).read_text(), paper_table=paper_table,
                 variant_from="folder" if quality else "recipe",
                 paired=page != "results.md",
                 # issue 16's no-collapse rule, judged run by run on both quality pages
                 rise_after=10 if quality else None,
                 block_bench=REPO / "docs" / "benchmarks" / "runs" / "h100-2026-12-06-attnvar" / "attention.json"
                 if "attention-variants" in page else None)
    fresh = out.read_text()

    def body(text: str) -> list[str]:
        # the report's own command line and run-folder paths name where it was written from
        return [line for line in text.splitlines() if "ganzoo report" not in line and str(tmp_path) not in line]

    assert body(fresh) == body(committed)
    assert needle in committed  # from the runs' metrics.jsonl


def test_documented_ganzoo_run_commands_are_valid_recipes():
    """Every ``ganzoo run RECIPE --set ...`` in a bash block of docs/training.md names a recipe that
    validates with those overrides (the fastest-settings command among them)."""
    from ganzoo.recipe import load_recipe

    text = (REPO / "docs" / "training.md").read_text()
    commands = [" ".join(b.replace("\\\n", " ").split()) for b in _bash_blocks(text)]
    runs = [c for c in commands if c.startswith("ganzoo run ")]
    assert runs, "docs/training.md shows no ganzoo run command"
    for cmd in runs:
        words = cmd.split()
        sets = [words[i + 1] for i, w in enumerate(words) if w == "--set"]
        recipe = load_recipe(REPO / words[2], sets)  # RecipeError if they do not validate
        dumped = recipe.model_dump()
        for override in sets:
            path, value = override.split("=", 1)
            node = dumped
            for key in path.split("."):
                node = node[key]
            assert str(node).lower() == value.lower(), (cmd, override, node)


_MD_LINK = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)')


def _relative_link_targets(text: str) -> list[str]:
    """The relative targets (no scheme, no bare #anchor; anchor dropped) of a Markdown text's links and
    images, outside fenced code blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    targets = [m.group(1) for m in _MD_LINK.finditer(text)]
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[A-Za-z][A-Za-z+.-]*:", t) and not t.startswith("#")]


def test_relative_links_resolve():
    """Every relative link and image of every tracked Markdown page points at a file or folder that
    exists. Notes files (``NOTES*.md``) are left out: they head a generated report elsewhere, so their
    links are written relative to that page, which is checked instead."""
    tracked = subprocess.run(["git", "ls-files", "*.md"], cwd=REPO, capture_output=True, text=True, timeout=60)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout")
    pages = [REPO / f for f in tracked.stdout.split() if not Path(f).name.startswith("NOTES")]
    assert any(p.name == "README.md" for p in pages)
    broken = [f"{p.relative_to(REPO)}: {t}" for p in pages for t in _relative_link_targets(p.read_text())
              if not (p.parent / t).exists()]
    assert not broken, "broken relative links:\n" + "\n".join(broken)


def test_relative_link_targets_are_found():
    text = ('[a](docs/x.md#sec) ![img](b.png "t") [web](https://e.org) [top](#here) [m](mailto:a@b)\n'
            "```bash\n[not](code.md)\n```\n")
    assert _relative_link_targets(text) == ["docs/x.md", "b.png"]


def test_architecture_registration_example_registers():
    """docs/architecture.md's "Registering a block" example is accepted by the registry as written (in a
    fresh process, so that the example block does not join the registry the other tests iterate over)."""
    text = (REPO / "docs" / "architecture.md").read_text()
    examples = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "ATTENTION.register" in b]
    assert len(examples) == 1, "docs/architecture.md: expected one registration example"
    code = examples[0] + "\nfrom ganzoo.registry import ATTENTION as _A\nassert 'my_attention' in _A\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "GANZOO_DISABLE_PLUGINS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
