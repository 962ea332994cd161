"""``eval.standing_stats`` (issue 16): EMA-G's batch-norm statistics recomputed before evaluating, as the
exact average of batch statistics over seeded batches, on a copy, leaving the generator untouched."""
from __future__ import annotations

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
