"""``eval.standing_stats`` (issue 16): EMA-G's batch-norm statistics recomputed before evaluating, as the
exact average of batch statistics over seeded batches, on a copy, leaving the generator untouched."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import SHARED, tiny_recipe
from ganzoo.recipe import validate
from ganzoo.training.build import build_generator
from ganzoo.training.sampling import batch_norms, generate, with_standing_statistics

WEIGHTS = SHARED / "weights" / "fid-inception-2015-12-05.pth"
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def _generator(num_classes: int = 10):
    recipe = validate(tiny_recipe(num_classes=num_classes, train={"steps": 1}), "tiny")
    torch.manual_seed(0)
    G = build_generator(recipe).eval()
    with torch.no_grad():  # running statistics that are not the standing ones
        for m in batch_norms(G):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return G


@pytest.mark.parametrize("num_classes", [0, 10])
def test_standing_statistics_are_the_exact_average_of_batch_statistics(num_classes):
    G = _generator(num_classes)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def record(name):
        def hook(module, inputs, output):  # deep-copied with G: records what the copy's norms see
            x = inputs[0].double()
            seen.setdefault(name, []).append((x.mean((0, 2, 3)), x.var((0, 2, 3), unbiased=True)))
        return hook

    names = {m: n for n, m in G.named_modules()}
    handles = [m.register_forward_hook(record(names[m])) for m in batch_norms(G)]
    S = with_standing_statistics(G, batches=3, batch_size=5, num_classes=num_classes, seed=1)
    for h in handles:
        h.remove()
    assert S is not G and not S.training
    assert all(torch.equal(v, before[k]) for k, v in G.state_dict().items()), "the generator itself changed"
    standing = dict(S.named_modules())
    assert seen and all(len(v) == 3 for v in seen.values())
    for name, stats in seen.items():
        bn = standing[name]
        mean = torch.stack([m for m, _ in stats]).mean(0)
        var = torch.stack([v for _, v in stats]).mean(0)
        torch.testing.assert_close(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == G.get_submodule(name).momentum  # restored
        assert int(bn.num_batches_tracked) == 3
    # spectral norm's vectors are not advanced by the pass (only the batch norms ran in train mode)
    for k, v in S.state_dict().items():
        if k.endswith(("_u", "_v", ".u", ".v")):
            assert torch.equal(v, before[k]), k
    # the same seed gives the same statistics; the samples change with them
    again = with_standing_statistics(G, batches=3, batch_size=5, num_classes=num_classes, seed=1)
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in S.state_dict().items())
    z = torch.randn(4, int(G.z_dim))
    y = torch.arange(4) % num_classes if num_classes else None
    assert not torch.equal(generate(G, z, y), generate(S, z, y))


def test_off_or_without_batch_norm_is_the_generator_itself():
    G = _generator()
    assert with_standing_statistics(G, 0, 5, 10, 0) is G
    recipe = validate(tiny_recipe(generator={"norm": "none"}, train={"steps": 1}), "tiny")
    plain = build_generator(recipe)
    assert not batch_norms(plain) and with_standing_statistics(plain, 4, 5, 10, 0) is plain


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_eval_command_takes_standing_stats(tmp_path, capsys):
    import json

    from ganzoo.cli import main
    from ganzoo.training import train

    recipe = validate(tiny_recipe(train={"steps": 2, "batch_size": 4, "checkpoint_every": 2}), "tiny")
    run = tmp_path / "run"
    assert train(recipe, run, "cpu", progress=False).status == "finished"
    capsys.readouterr()
    base = ["eval", str(run), "--metrics", "kid", "--num-samples", "8", "--device", "cpu",
            "--inception-weights", str(WEIGHTS), "--json"]
    assert main(base) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(base + ["--standing-stats", "2"]) == 0
    standing = json.loads(capsys.readouterr().out)
    assert plain["standing_stats"] == 0 and standing["standing_stats"] == 2
    assert standing["kid"] != plain["kid"]
    assert main(base[:-1] + ["--standing-stats", "2"]) == 0
    assert "standing statistics over 2 batches" in capsys.readouterr().out
    assert main(base + ["--standing-stats", "-1"]) == 2
    assert "eval.standing_stats" in capsys.readouterr().err


# ----------------------------------------------------------------------------- sample, export, grids
def _standing_run(tmp_path, batches: int = 2):
    """A finished tiny run whose recipe evaluates with standing statistics over ``batches`` batches."""
    from ganzoo.training import train

    recipe = validate(tiny_recipe(train={"steps": 2, "batch_size": 4, "checkpoint_every": 2, "sample_every": 2},
                                  eval={"standing_stats": batches, "batch_size": 5}), "tiny")
    result = train(recipe, tmp_path / "run", "cpu", progress=False)
    assert result.status == "finished"
    return result


def _evaluated_run(tmp_path, sample_every: int):
    """A finished tiny run evaluated (KID) at its last step, step 2, with standing statistics over 2 batches."""
    from ganzoo.training import train

    recipe = validate(tiny_recipe(train={"steps": 2, "batch_size": 4, "checkpoint_every": 2, "sample_every": sample_every},
                                  eval={"every": 2, "metrics": ["kid"], "num_samples": 8, "batch_size": 5,
                                        "standing_stats": 2, "inception_weights": str(WEIGHTS)}), "tiny")
    return train(recipe, tmp_path / "run", "cpu", progress=False)


def _stats(G) -> list[torch.Tensor]:
    return [t.clone() for m in batch_norms(G) for t in (m.running_mean, m.running_var)]


def _same(a, b) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def test_sample_and_export_use_the_statistics_the_evaluations_used(tmp_path, capsys):
    """A recipe with eval.standing_stats: sample, export and the grids see EMA-G with the standing
    statistics (noise seed 0) that its evaluations measured, not the running ones copied from G;
    --standing-stats 0 gives the stored ones; an export keeps them and says so."""
    from safetensors import safe_open

    from ganzoo.cli import main
    from ganzoo.training.export import generator_from_checkpoint, load_generator, open_generator
    from ganzoo.training.checkpoint import load_checkpoint

    result = _standing_run(tmp_path)
    raw, recipe = generator_from_checkpoint(load_checkpoint(result.checkpoint), "ckpt")
    expected = _stats(with_standing_statistics(raw, 2, 5, recipe.num_classes, 0))
    assert not _same(expected, _stats(raw))

    opened = open_generator(result.run_dir)
    assert opened.standing == 2 and _same(_stats(opened.G), expected)
    assert "standing statistics over 2 batches" in opened.describe()
    stored = open_generator(result.run_dir, standing_stats=0)
    assert stored.standing == 0 and _same(_stats(stored.G), _stats(raw))

    capsys.readouterr()
    assert main(["sample", str(result.run_dir), "--n", "4", "--out", str(tmp_path / "g.png"), "--device", "cpu"]) == 0
    assert "standing statistics over 2 batches" in capsys.readouterr().out

    out = tmp_path / "export"
    assert main(["export", str(result.run_dir), "--out", str(out), "--device", "cpu"]) == 0
    assert "standing statistics over 2 batches" in capsys.readouterr().out
    assert _same(_stats(load_generator(out)), expected)
    with safe_open(str(out / "generator.safetensors"), "pt") as f:
        assert f.metadata()["standing_stats"] == "2"
    again = open_generator(out)  # the exported statistics, not recomputed
    assert again.standing == 2 and _same(_stats(again.G), expected)

    plain = tmp_path / "plain"
    assert main(["export", str(result.run_dir), "--out", str(plain), "--standing-stats", "0", "--device", "cpu"]) == 0
    assert "standing" not in capsys.readouterr().out
    assert _same(_stats(load_generator(plain)), _stats(raw))

    for bad in ("-1", "100001"):  # a huge count would run for hours before the first image
        assert main(["sample", str(result.run_dir), "--n", "4", "--out", str(tmp_path / "h.png"),
                     "--standing-stats", bad]) == 2
        err = capsys.readouterr().err
        assert f"--standing-stats must be between 0 and 100000, got {bad}" in err and "Traceback" not in err
    assert not (tmp_path / "h.png").exists()
    # export too, before reading anything (eval sets the recipe's eval.standing_stats, whose error names that field)
    assert main(["export", str(result.run_dir), "--out", str(tmp_path / "e"), "--standing-stats", "100001"]) == 2
    assert "export: --standing-stats must be between 0 and 100000, got 100001" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


def test_progress_grids_use_the_standing_statistics(tmp_path):
    """The run's last grid is EMA-G's fixed-noise samples with the evaluations' batch-norm statistics."""
    from PIL import Image

    from ganzoo.training.checkpoint import load_checkpoint
    from ganzoo.training.export import generator_from_checkpoint
    from ganzoo.training.sampling import fixed_noise

    result = _standing_run(tmp_path)
    raw, recipe = generator_from_checkpoint(load_checkpoint(result.checkpoint), "ckpt")
    z, y, cols = fixed_noise(int(raw.z_dim), recipe.num_classes, recipe.seed)
    grid = torch.tensor(np.array(Image.open(result.run_dir / "samples" / "step-00000002.png")))

    def first_tile(G):
        return generate(G, z[:1], y[:1])[0].permute(1, 2, 0)

    tile = grid[2:34, 2:34]  # the first image, after the 2-pixel pad
    standing = first_tile(with_standing_statistics(raw, 2, 5, recipe.num_classes, recipe.seed))
    assert torch.equal(tile, standing)
    assert not torch.equal(tile, first_tile(raw))


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_a_grid_at_an_evaluated_step_shows_the_generator_the_evaluation_measured(tmp_path):
    """At a step that is evaluated, the progress grid uses the evaluation's standing buffers (noise seed
    recipe.seed + step, stored beside the checkpoint) rather than computing others from another seed: the
    last grid is the generator the run's FID belongs to, as `ganzoo sample` shows it."""
    from PIL import Image

    from ganzoo.training.checkpoint import load_checkpoint
    from ganzoo.training.export import generator_from_checkpoint
    from ganzoo.training.sampling import fixed_noise

    result = _evaluated_run(tmp_path, sample_every=2)
    recipe = result.recipe
    raw, _ = generator_from_checkpoint(load_checkpoint(result.checkpoint), "ckpt")
    z, y, _ = fixed_noise(int(raw.z_dim), recipe.num_classes, recipe.seed)
    tile = torch.tensor(np.array(Image.open(result.run_dir / "samples" / "step-00000002.png")))[2:34, 2:34]

    def first_tile(seed):
        G = with_standing_statistics(raw, 2, 5, recipe.num_classes, seed)
        return generate(G, z[:1], y[:1])[0].permute(1, 2, 0)

    assert torch.equal(tile, first_tile(recipe.seed + 2))  # the evaluation's noise seed
    assert not torch.equal(tile, first_tile(recipe.seed))


def test_slow_standing_statistics_are_announced(monkeypatch, capsys):
    """On the CPU, standing statistics that will take long (50 CIFAR batches take minutes) say so after the
    first batch, with how to skip them; without ``progress`` (in-run grids, tests) nothing is printed."""
    import ganzoo.training.sampling as sampling

    G = _generator()
    monkeypatch.setattr(sampling, "CPU_NOTICE_SECONDS", 0.0)
    with_standing_statistics(G, 3, 5, 10, 0, progress=True)
    err = capsys.readouterr().err
    assert "standing statistics over 3 batches of 5 on the CPU: about" in err and "--standing-stats 0" in err
    with_standing_statistics(G, 3, 5, 10, 0)
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(sampling, "CPU_NOTICE_SECONDS", 1e9)
    with_standing_statistics(G, 3, 5, 10, 0, progress=True)
    assert "about" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- the evaluation's, stored
@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_the_evaluations_standing_statistics_are_stored_beside_its_checkpoint(tmp_path, capsys):
    """An evaluation with standing statistics stores EMA-G's batch-norm buffers beside the evaluated
    checkpoint; sample/export then use exactly those (the evaluation's noise seed), without recomputing.
    Another batch count, or a damaged file, recomputes; the file belongs to the run folder."""
    from ganzoo.cli import main
    from ganzoo.training.checkpoint import load_checkpoint, standing_path
    from ganzoo.training.export import generator_from_checkpoint, load_generator, open_generator
    from ganzoo.training.rundir import foreign_entries

    result = _evaluated_run(tmp_path, sample_every=0)
    recipe = result.recipe
    side = standing_path(result.checkpoint)
    assert side.name == "step-00000002.standing.safetensors" and side.is_file()
    assert foreign_entries(result.run_dir) == []

    raw, _ = generator_from_checkpoint(load_checkpoint(result.checkpoint), "ckpt")
    evaluated = _stats(with_standing_statistics(raw, 2, 5, recipe.num_classes, recipe.seed + 2))
    recomputed = _stats(with_standing_statistics(raw, 2, 5, recipe.num_classes, 0))
    assert not _same(evaluated, recomputed)
    opened = open_generator(result.run_dir)
    assert opened.standing == 2 and _same(_stats(opened.G), evaluated)
    out = tmp_path / "export"
    assert main(["export", str(result.run_dir), "--out", str(out), "--device", "cpu"]) == 0
    assert _same(_stats(load_generator(out)), evaluated)

    other = open_generator(result.run_dir, standing_stats=3)  # not what was stored: computed
    assert _same(_stats(other.G), _stats(with_standing_statistics(raw, 3, 5, recipe.num_classes, 0)))
    side.write_bytes(b"not safetensors")  # a damaged cache is recomputed, never an error
    assert _same(_stats(open_generator(result.run_dir).G), recomputed)


def test_pruning_removes_the_standing_statistics_of_removed_checkpoints(tmp_path):
    from ganzoo.training.checkpoint import prune_checkpoints

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step in (1, 2, 3):
        (folder / f"step-{step:08d}.pt").write_bytes(b"x")
        (folder / f"step-{step:08d}.standing.safetensors").write_bytes(b"y")
    prune_checkpoints(tmp_path, keep_last=1, keep={1})
    assert sorted(p.name for p in folder.iterdir()) == [
        "step-00000001.pt", "step-00000001.standing.safetensors", "step-00000003.pt",
        "step-00000003.standing.safetensors"]
