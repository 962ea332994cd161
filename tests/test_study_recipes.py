"""The GPU study's recipes (benchmarks/device/gpu_window.sh job `study`, issues 19 and 20): exactly the ablation's
seven and the attention blocks issue 20 adds, and each of them trains, on the CPU here and with the study's
speed settings on the GPU (`pytest -m gpu`), before hours of GPU time are spent on them."""
from __future__ import annotations

import math
import subprocess

import pytest

from conftest import REPO
from ganzoo.recipe import load_raw, validate

SCRIPT = REPO / "benchmarks" / "device" / "gpu_window.sh"
ABLATION = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "recipes" / "ablations").glob("*.yaml"))
EXTRA = [f"recipes/ablations/attention-variants/{b}.yaml"
         for b in ("mhsa", "non_local", "efficient", "global_context", "squeeze_excitation")]
STUDY = ABLATION + EXTRA
pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


def test_the_study_runs_the_ablation_then_the_other_attention_blocks():
    """The script's default groups, as bash expands them in the repository: issue 19's seven recipes, then
    issue 20's blocks other than `sagan` and `none` (which are issue 19's feat16 and none runs)."""
    show = 'source <(sed -n "/^STUDY_GROUPS_BOTH=/,/)\\"$/p" benchmarks/device/gpu_window.sh); ' \
           'IFS=";" read -ra g <<< "$STUDY_GROUPS_BOTH"; for x in "${g[@]}"; do echo $x; done'
    out = subprocess.run(["bash", "-c", show], cwd=REPO, capture_output=True, text=True, check=True).stdout
    groups = [line.split() for line in out.splitlines() if line.strip()]
    assert groups == [ABLATION, EXTRA]
    assert len(ABLATION) == 7


def _study_recipe(path: str, **train):
    """The recipe as the study trains it, on synthetic data (no dataset needed) and a few steps."""
    data = load_raw(REPO / path)
    data["data"] = {"type": "synthetic", "num_images": 64, "num_test_images": 16}
    data["eval"] = {**data.get("eval", {}), "metrics": [], "standing_stats": 0}
    data["train"] = {**data.get("train", {}), "log_every": 1, "sample_every": 0, "checkpoint_every": 1000, **train}
    return validate(data, path)


def _trains(recipe, tmp_path, device: str):
    import json

    from ganzoo.training import train

    result = train(recipe, tmp_path / "run", device, progress=False)
    assert result.status == "finished" and result.step == recipe.train.steps
    rows = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r[k] for r in rows for k in ("loss/d", "loss/g") if k in r]
    assert losses and all(math.isfinite(v) for v in losses)


@pytest.mark.parametrize("path", STUDY)
def test_each_study_recipe_trains_on_the_cpu(path, tmp_path):
    # the recipe's widths, attention and optimisation; one step of batch 4 (its d_steps D updates, then G's)
    _trains(_study_recipe(path, steps=1, batch_size=4), tmp_path, "cpu")


@pytest.mark.gpu
@pytest.mark.parametrize("path", STUDY)
def test_each_study_recipe_trains_with_the_study_speed_settings(path, tmp_path):
    """The study's settings but compile (minutes per recipe; its compiled kernels are checked against eager in
    tests/test_cuda_graph.py): the CUDA graph replays (2 warm-up iterations, the capture, then replays)."""
    recipe = _study_recipe(path, steps=6, cuda_graph=True, d_concat=True, channels_last=True)
    data = recipe.model_dump(mode="json")
    for net in ("generator", "discriminator"):
        data[net]["fused_resample"] = True
    _trains(validate(data, path), tmp_path, "cuda")
