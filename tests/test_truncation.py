"""The truncation trick (BigGAN, Brock et al. 2019) at sampling time: ``ganzoo sample --truncation T`` and
``ganzoo eval --truncation T`` draw G's noise from the normal truncated to [-T, T]
(``ganzoo.training.sampling.latent_noise``). Its draws are checked against the truncated normal's CDF and
variance computed in float64 from ``math.erf``, and the commands against a tiny trained run."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import SHARED, run_ganzoo, tiny_recipe
from ganzoo.training.sampling import latent_noise

ENV = {"OMP_NUM_THREADS": "1", "GANZOO_DISABLE_PLUGINS": "1"}
WEIGHTS = SHARED / "weights" / "fid-inception-2015-12-05.pth"


def _phi(x: float) -> float:  # the standard normal's CDF, float64
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def _truncated_cdf(x: float, t: float) -> float:
    return (_phi(x) - _phi(-t)) / (_phi(t) - _phi(-t))


def _truncated_variance(t: float) -> float:  # mean 0; Var = 1 - 2 t pdf(t) / (Phi(t) - Phi(-t))
    pdf = math.exp(-t * t / 2) / math.sqrt(2 * math.pi)
    return 1.0 - 2.0 * t * pdf / (_phi(t) - _phi(-t))


@pytest.mark.parametrize("t", [0.02, 0.5, 1.0, 2.0, 40.0])
def test_truncated_noise_follows_the_truncated_normal(t):
    z = latent_noise(2000, 200, torch.Generator().manual_seed(7), t).double()
    assert z.shape == (2000, 200) and z.abs().max() <= t
    n = z.numel()
    var = _truncated_variance(t)
    assert abs(z.mean().item()) < 5 * math.sqrt(var / n)
    assert z.var().item() == pytest.approx(var, rel=0.02)
    flat = np.sort(z.flatten().numpy())
    for q in (-0.9, -0.5, -0.1, 0.0, 0.3, 0.75):  # the empirical CDF at points inside [-t, t]
        x = q * min(t, 3.0)
        empirical = np.searchsorted(flat, x, side="right") / n
        assert empirical == pytest.approx(_truncated_cdf(x, t), abs=0.005), (t, x)


def test_noise_without_truncation_is_the_stream_grids_and_evaluations_always_used():
    a = latent_noise(5, 7, torch.Generator().manual_seed(3))
    assert torch.equal(a, torch.randn(5, 7, generator=torch.Generator().manual_seed(3)))
    b = latent_noise(5, 7, torch.Generator().manual_seed(3), 0.5)
    assert torch.equal(b, latent_noise(5, 7, torch.Generator().manual_seed(3), 0.5))  # seeded: repeatable
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="truncation must be a positive finite number"):
            latent_noise(2, 2, torch.Generator(), bad)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A finished 2-step CPU run of the tiny recipe (no evaluation)."""
    tmp = tmp_path_factory.mktemp("trunc")
    recipe = tmp / "tiny.yaml"
    recipe.write_text(yaml.safe_dump(tiny_recipe(
        data={"num_images": 8, "num_test_images": 8}, eval={"metrics": [], "standing_stats": 0},
        train={"steps": 2, "batch_size": 4, "log_every": 1, "sample_every": 0, "checkpoint_every": 2})))
    out = run_ganzoo("run", str(recipe), "--out", str(tmp / "runs"), "--device", "cpu", "--no-progress",
                     cwd=tmp, env=ENV)
    assert out.returncode == 0, out.stderr
    return tmp / "runs" / "tiny"


def _tiles(png: Path, n: int, size: int = 32, pad: int = 2) -> list[np.ndarray]:
    from PIL import Image

    grid = np.asarray(Image.open(png), dtype=np.int16)
    return [grid[pad: pad + size, pad + i * (size + pad): pad + i * (size + pad) + size] for i in range(n)]


def test_sample_with_a_small_truncation_draws_nearly_one_image_per_class(run, tmp_path):
    """With T tiny every z is ~0, so the samples of one class are the same image up to rounding; without it
    they differ. The summary line says the noise was truncated."""
    common = ["--n", "4", "--columns", "4", "--class", "2", "--device", "cpu", "--standing-stats", "0"]
    out = run_ganzoo("sample", str(run), "--out", str(tmp_path / "t.png"), "--truncation", "1e-4", *common,
                     cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr
    assert "noise truncated to [-0.0001, 0.0001]" in out.stdout
    tiles = _tiles(tmp_path / "t.png", 4)
    assert all(np.abs(tile - tiles[0]).max() <= 1 for tile in tiles[1:])
    out = run_ganzoo("sample", str(run), "--out", str(tmp_path / "p.png"), *common, cwd=tmp_path, env=ENV)
    assert out.returncode == 0, out.stderr
    assert "truncated" not in out.stdout
    tiles = _tiles(tmp_path / "p.png", 4)
    assert max(np.abs(tile - tiles[0]).max() for tile in tiles[1:]) > 8


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf"])
@pytest.mark.parametrize("command", ["sample", "eval"])
def test_a_truncation_that_is_not_a_positive_number_is_one_line_and_writes_nothing(run, tmp_path, command, value):
    extra = ["--out", str(tmp_path / "g.png")] if command == "sample" else ["--metrics", "kid"]
    out = run_ganzoo(command, str(run), *extra, f"--truncation={value}", "--device", "cpu", cwd=tmp_path, env=ENV)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"{command}: --truncation must be a positive number of standard deviations")
    assert not (tmp_path / "g.png").exists()


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"needs the FID Inception weights at {WEIGHTS}")
def test_eval_measures_the_truncated_samples_and_says_so(run, tmp_path):
    args = ["eval", str(run), "--metrics", "kid", "--num-samples", "8", "--device", "cpu", "--json",
            "--inception-weights", str(WEIGHTS)]
    rows = {}
    for t in (None, "1e-4"):
        out = run_ganzoo(*args, *(["--truncation", t] if t else []), cwd=tmp_path, env=ENV)
        assert out.returncode == 0, out.stderr
        rows[t] = json.loads(out.stdout)
    assert rows[None]["truncation"] is None and rows["1e-4"]["truncation"] == 1e-4
    assert rows["1e-4"]["kid"] != rows[None]["kid"]  # other samples: a nearly constant set per class
