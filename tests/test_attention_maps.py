"""`ganzoo attention-maps` and the attention gates (issue 19): a figure from a quickstart-sized run,
maps that are distributions over the keys, gammas.json and the report's gate column."""
from __future__ import annotations

import json
import struct

import pytest
import torch

from conftest import tiny_recipe
from ganzoo.cli import main as cli
from ganzoo.recipe import validate

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _png_size(path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", head[16:24])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A ~10-step run: widths 4, attention at 16 in G and D, EMA from the start."""
    from ganzoo.training import train

    recipe = validate(tiny_recipe(train={"steps": 10, "batch_size": 4, "log_every": 5, "sample_every": 10,
                                         "checkpoint_every": 5, "ema": {"decay": 0.9, "start": 0}}), "tiny")
    out = tmp_path_factory.mktemp("attn") / "run"
    assert train(recipe, out, "cpu", progress=False).status == "finished"
    # the loop wrote gammas.json with its checkpoints (before any command below reads the folder)
    (out / "gammas.trained.json").write_bytes((out / "gammas.json").read_bytes())
    return out


def test_figure_from_a_tiny_run(run_dir, tmp_path, capsys):
    fig = tmp_path / "fig.png"
    assert cli(["attention-maps", str(run_dir), "--out", str(fig), "--checkpoint", "last", "--queries", "3"]) == 0
    w, h = _png_size(fig)
    assert 300 <= w <= 4000 and 300 <= h <= 4000  # one row for the sample, one per attention block
    said = capsys.readouterr().out
    assert f"wrote {fig}: 1 attention block(s)" in said and "step-" in said and "(step 10, last)" in said
    gammas = json.loads((run_dir / "gammas.json").read_text())
    assert gammas["step"] == 10 and gammas["weights"] == "ema"
    assert list(gammas["generator"]) == ["blocks.1.1"] and gammas["discriminator"]
    assert all(isinstance(v, float) for v in gammas["generator"].values())


def test_maps_are_distributions_over_the_pooled_keys(run_dir):
    from ganzoo.attention_maps import capture_maps, query_points
    from ganzoo.training.export import open_generator

    G = open_generator(run_dir, checkpoint="last").G
    queries = query_points(4)
    image, blocks = capture_maps(G, torch.randn(1, G.z_dim), torch.tensor([3]), queries)
    assert image.shape == (3, 32, 32)
    (block,) = blocks
    assert block.size == (16, 16) and block.key_grid == (8, 8)  # SAGAN pools keys 2x2
    assert block.maps.shape == (4, 8, 8)
    torch.testing.assert_close(block.maps.sum(dim=(1, 2)), torch.ones(4))
    assert not torch.allclose(block.maps[0], block.maps[1])  # different queries look at different places
    assert block.gamma == pytest.approx(float(G.state_dict()["blocks.1.1.gamma"]))


def test_one_line_errors(run_dir, tmp_path, capsys):
    assert cli(["attention-maps", str(run_dir), "--out", str(tmp_path / "fig.txt")]) == 2
    assert cli(["attention-maps", str(run_dir), "--out", str(tmp_path / "no" / "fig.png")]) == 2
    assert cli(["attention-maps", str(run_dir), "--out", str(tmp_path / "f.png"), "--class", "10"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "must be a .png file" in err[0] and "does not exist" in err[1] and "--class" in err[2]
    assert not any(tmp_path.iterdir())


def test_a_generator_without_attention_is_refused(tmp_path):
    from ganzoo.attention_maps import AttentionMapError, attention_figure
    from ganzoo.training.build import build_generator

    recipe = validate(tiny_recipe(train={"steps": 1, "batch_size": 4},
                                  generator={"attention_resolutions": []}), "tiny")
    with pytest.raises(AttentionMapError, match="this generator has no attention block"):
        attention_figure(build_generator(recipe).eval(), tmp_path / "f.png", num_classes=10)
    assert not (tmp_path / "f.png").exists()


def test_the_command_names_the_file_of_a_generator_without_attention(tmp_path, capsys):
    from ganzoo.training.checkpoint import latest_checkpoint
    from ganzoo.training.loop import train

    recipe = validate(tiny_recipe(train={"steps": 1, "batch_size": 4, "checkpoint_every": 1},
                                  generator={"attention_resolutions": []}), "tiny")
    result = train(recipe, tmp_path / "run", device="cpu", progress=False, handle_signals=False)
    assert cli(["attention-maps", str(result.run_dir), "--out", str(tmp_path / "f.png"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    ckpt = latest_checkpoint(result.run_dir)[0]
    assert len(err) == 1 and f"{ckpt}: this generator has no attention block" in err[0], err
    assert "generator.attention_resolutions is empty" in err[0] and not (tmp_path / "f.png").exists()


def test_report_puts_the_gates_in_its_table(run_dir, tmp_path):
    from ganzoo.reporting import build_report

    (run_dir / "gammas.json").unlink(missing_ok=True)  # the report writes it from the last checkpoint
    text = build_report([run_dir], tmp_path / "r.md", paper_table=False).read_text()
    gammas = json.loads((run_dir / "gammas.json").read_text())
    g = gammas["generator"]["blocks.1.1"]
    assert "gate γ in G / D (end) |" in text
    assert f"G: blocks.1.1 {g:.3g}; D: blocks.1.1 " in text


def test_a_damaged_gammas_file_is_n_a_in_the_report_not_a_failure(tmp_path):
    import shutil

    from conftest import REPO
    from ganzoo.training.gammas import read_gammas
    from ganzoo.errors import GanzooError
    from ganzoo.reporting import build_report

    run = tmp_path / "ablation-feat16-s0"
    shutil.copytree(REPO / "docs" / "ablations" / "runs" / run.name, run, ignore=shutil.ignore_patterns("samples"))
    (run / "gammas.json").write_text("{not json")
    with pytest.raises(GanzooError, match="gammas.json: unreadable"):
        read_gammas(run)
    with pytest.warns(UserWarning, match="gates not read"):
        text = build_report([run], tmp_path / "r.md", paper_table=False).read_text()
    assert "| ablation-feat16 |" in text and "gate γ" not in text
    (run / "gammas.json").write_text('{"step": 5600, "generator": {"blocks.1.1": 0.25}, "discriminator": {}}')
    assert "| G: blocks.1.1 0.25; D: - |" in build_report([run], tmp_path / "r.md", paper_table=False).read_text()


def test_nested_attention_modules_are_drawn_once():
    from torch import nn

    from ganzoo.attention_maps import attention_blocks

    class Attn(nn.Module):
        def __init__(self, inner=None):
            super().__init__()
            self.inner = inner

        def attention_map(self, x):
            return x

    G = nn.Sequential(Attn(Attn()), nn.Identity(), Attn())
    assert [n for n, _ in attention_blocks(G)] == ["0", "2"]


def test_training_writes_gammas_with_every_checkpoint(run_dir):
    """The loop writes gammas.json with each checkpoint: its step is the last checkpoint's, before any
    command reads the folder (the fixture only trained it)."""
    from ganzoo.training.checkpoint import list_checkpoints
    from ganzoo.training.rundir import OWN_FILES

    written = json.loads((run_dir / "gammas.trained.json").read_text())
    assert written["step"] == list_checkpoints(run_dir)[-1][0] == 10
    assert written["generator"] and "gammas.json" in OWN_FILES  # --force may remove it


def test_write_gammas_from_the_payload_in_memory_matches_the_file(run_dir, tmp_path):
    from ganzoo.training.gammas import write_gammas
    from ganzoo.training.checkpoint import list_checkpoints, load_checkpoint

    from_disk = json.loads(write_gammas(run_dir).read_text())
    ckpt = load_checkpoint(list_checkpoints(run_dir)[-1][1])
    (tmp_path / "checkpoints").mkdir()
    assert json.loads(write_gammas(tmp_path, ckpt=ckpt).read_text()) == from_disk
    assert write_gammas(tmp_path / "checkpoints") is None  # no checkpoint: nothing written
