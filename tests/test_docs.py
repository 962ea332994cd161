"""Docs that must match the code: README's set-up commands, CI's test command, the recipe reference."""
from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import REPO

README = (REPO / "README.md").read_text()


def _readme_commands() -> list[str]:
    block = re.search(r"```bash\n(.*?)```", README, re.S)
    assert block, "README has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


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


def test_results_page_is_regenerated_from_the_committed_run(tmp_path):
    """docs/results.md is `ganzoo report` output over docs/runs/sagan-cifar10-10min: regenerating it
    from those files gives the same text (up to the output path in links and the command line)."""
    from ganzoo.reporting import build_report

    run = REPO / "docs" / "runs" / "sagan-cifar10-10min"
    committed = (REPO / "docs" / "results.md").read_text()
    out = tmp_path / "results.md"
    build_report([run], out, command=["ganzoo", "report", str(run), "--out", str(out)],
                 title="SAGAN on CIFAR-10: 10 minutes on one H100",
                 notes=(run / "NOTES.md").read_text(), paper_table=False)
    fresh = out.read_text()

    def body(text: str) -> list[str]:
        # the report's own command line and run-folder paths name where it was written from
        return [line for line in text.splitlines() if "ganzoo report" not in line and str(tmp_path) not in line]

    assert body(fresh) == body(committed)
    assert "| 32.60 |" in committed  # the final FID of the run, from its metrics.jsonl
