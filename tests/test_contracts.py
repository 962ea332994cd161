"""Typed contracts (ganzoo/contracts.py) and the conformance kit (``ganzoo check``).

Deliberately broken blocks, each caught: at registration (a missing method, also from a plugin) or
by the kit's property checks (a D loss with its sign flipped, a G loss with zero gradient, an
attention block that mixes keys across the batch).
"""
from __future__ import annotations

import importlib.metadata as md
import sys
import types
import warnings
from typing import Literal

import pytest
import torch
from torch import nn

from conftest import run_ganzoo
from ganzoo import cli, plugins
from ganzoo.augment._common import Augment
from ganzoo.config import BlockConfig
from ganzoo.contracts import CONTRACTS, contract_problem, flag
from ganzoo.registry import regularizer_active
from ganzoo.registry import LOSS, REGISTRIES, Registry, RegistryError
from ganzoo.testing import check_attention_block, check_loss
from ganzoo.testing.conformance import SelectionError, iter_checks

pytestmark = pytest.mark.usefixtures("one_cpu_thread")  # see conftest.py


# ----------------------------------------------------------------------------- broken blocks
class _XConfig(BlockConfig):
    type: Literal["x_test"] = "x_test"


class _FlippedConfig(BlockConfig):
    type: Literal["flipped_test"] = "flipped_test"


class _ZeroGradConfig(BlockConfig):
    type: Literal["zero_grad_test"] = "zero_grad_test"


class _MixingConfig(BlockConfig):
    type: Literal["mixing_test"] = "mixing_test"


class _FlippedRelConfig(BlockConfig):
    type: Literal["flipped_rel_test"] = "flipped_rel_test"


class _UndeclaredConfig(BlockConfig):
    type: Literal["undeclared_test"] = "undeclared_test"


class FlippedHinge:
    """Hinge with D's targets swapped: D is trained to call reals fake."""

    def __init__(self, cfg=None) -> None:
        pass

    def d_loss(self, real, fake):
        return torch.relu(1 + real.float()).mean() + torch.relu(1 - fake.float()).mean()

    def g_loss(self, real, fake):
        return -fake.float().mean()


class ZeroGradG(FlippedHinge):
    """A correct D loss, but G's loss is a constant as far as autograd goes."""

    def d_loss(self, real, fake):
        return torch.relu(1 - real.float()).mean() + torch.relu(1 + fake.float()).mean()

    def g_loss(self, real, fake):
        return (-fake.float().mean()).detach() + 0 * fake.float().sum()


class FlippedRelativisticG:
    """RaSGAN with G's loss sign-flipped: G is pushed to make fakes look less real than the reals."""

    g_needs_real = True

    def __init__(self, cfg=None) -> None:
        pass

    @staticmethod
    def _rel(real, fake):
        r, f = real.float(), fake.float()
        return r - f.mean(), f - r.mean()

    def d_loss(self, real, fake):
        r, f = self._rel(real, fake)
        return 0.5 * (torch.nn.functional.softplus(-r).mean() + torch.nn.functional.softplus(f).mean())

    def g_loss(self, real, fake):
        r, f = self._rel(real, fake)
        return 0.5 * (torch.nn.functional.softplus(-r).mean() + torch.nn.functional.softplus(f).mean())


class UndeclaredReal(FlippedRelativisticG):
    """A correct RaSGAN that reads the real logits in G's loss without declaring g_needs_real."""

    g_needs_real = False

    def g_loss(self, real, fake):
        r, f = self._rel(real, fake)
        return 0.5 * (torch.nn.functional.softplus(r).mean() + torch.nn.functional.softplus(-f).mean())


class OldSignatureLoss:
    """A plugin loss written for the old contract: g_loss(fake_logits)."""

    def __init__(self, cfg=None) -> None:
        pass

    def d_loss(self, real_logits, fake_logits):
        return torch.relu(1 - real_logits.float()).mean() + torch.relu(1 + fake_logits.float()).mean()

    def g_loss(self, fake_logits):
        return -fake_logits.float().mean()


class MixingAttention(nn.Module):
    """Every position attends uniformly to every position of every image of the batch: consistent with
    its own reference and attention map, gamma = 0 at start, but sample i depends on sample j."""

    def __init__(self, cfg=None, channels: int = 8) -> None:
        super().__init__()
        self.value = nn.Conv2d(channels, channels, 1, bias=False)
        self.gamma = nn.Parameter(torch.zeros(()))

    @staticmethod
    def _mix(v):
        return v.mean(dim=(0, 2), keepdim=True).expand_as(v)

    def forward(self, x):
        v = self.value(x).flatten(2)
        return x + self.gamma.to(x.dtype) * self._mix(v).reshape(x.shape).to(x.dtype)

    def attention_map(self, x):
        b, _, h, w = x.shape
        return torch.full((b, h * w, h * w), 1.0 / (h * w), device=x.device)

    def reference(self, x):
        x64 = x.to(torch.float64)
        v = torch.einsum("oc,bcn->bon", self.value.weight.detach().to(torch.float64).flatten(1), x64.flatten(2))
        return x64 + self.gamma.detach().to(torch.float64) * self._mix(v).reshape(x64.shape)


class NoMapAttention(MixingAttention):
    attention_map = None  # type: ignore[assignment]


# ----------------------------------------------------------------------------- registration
def test_every_registered_block_meets_its_contract():
    for kind, reg in REGISTRIES.items():
        assert kind in CONTRACTS
        for entry in reg:
            assert contract_problem(kind, entry.obj) is None, (kind, entry.name)


def test_missing_method_is_refused_at_registration_in_one_line():
    class NoMap(nn.Module):
        def __init__(self, cfg, channels):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x

        def reference(self, x):
            return x.double()

    reg = Registry("attention")
    with pytest.raises(RegistryError) as err:
        reg.register(_XConfig, NoMap)
    msg = str(err.value)
    assert msg.startswith("attention 'x_test' (builtin): missing method 'attention_map' required by the attention contract")
    assert "\n" not in msg and "x_test" not in reg.names()


@pytest.mark.parametrize(("kind", "cls", "expect"), [
    ("loss", type("OnlyD", (), {"d_loss": lambda s, r, f: r}), "missing method 'g_loss'"),
    ("loss", type("BadFlag", (OldSignatureLoss,), {"g_loss": lambda s, r, f: f, "g_needs_real": 1}),
     "flag 'g_needs_real' must be bool, got int"),
    ("loss", type("Swapped", (OldSignatureLoss,), {"g_loss": lambda s, fake_logits, real_logits=None: fake_logits}),
     "g_loss(fake_logits, real_logits) takes its arguments in the wrong order: the loss contract is "
     "g_loss(real_logits, fake_logits)"),
    ("loss", type("ThreeArgs", (OldSignatureLoss,), {"g_loss": lambda s, r, f, extra: f}),
     "g_loss(r, f, extra) does not take 2 arguments"),
    ("regularizer", type("NoKeywords", (), {"penalty": lambda s, D, r, f, y=None: 0, "needs_real_grad": False,
                                            "uses_logits": True}),
     "penalty does not take the keyword 'real_logits' that uses_logits = True asks for"),
    ("regularizer", type("NoState", (), {"penalty": lambda s, *a, **k: 0, "needs_real_grad": False, "stateful": True}),
     "missing method 'state_dict' required by the regularizer contract when stateful = True"),
    ("regularizer", type("NoFlag", (), {"penalty": lambda s, *a: 0}), "missing class attribute 'needs_real_grad'"),
    ("regularizer", type("BadFlag", (), {"penalty": lambda s, *a: 0, "needs_real_grad": "no"}),
     "flag 'needs_real_grad' must be bool, got str"),
    ("augment", type("NoApply", (Augment,), {"sample_params": lambda s, *a: {}, "reference": lambda s, *a: 0}),
     "missing method 'apply'"),  # the base class's placeholder does not count
    ("generator", type("NoForward", (nn.Module,), {}), "missing method 'forward'"),
    ("weight_norm", type("NotCallable", (), {}), "missing method '__call__'"),
])
def test_each_kind_refuses_what_its_contract_requires(kind, cls, expect):
    assert expect in (contract_problem(kind, cls) or "")


def test_old_one_argument_g_loss_is_refused_in_one_line_naming_the_new_signature():
    reg = Registry("loss")
    with pytest.raises(RegistryError) as err:
        reg.register(_XConfig, OldSignatureLoss)
    msg = str(err.value)
    assert msg.startswith("loss 'x_test' (builtin): g_loss(fake_logits) has the old one-argument signature: "
                          "the loss contract is now g_loss(real_logits, fake_logits)")
    assert "\n" not in msg and "x_test" not in reg.names()
    # the migrated form registers, with or without the flag; *args passes (cannot be read)
    for body in ({"g_loss": lambda s, real_logits, fake_logits: -fake_logits.mean()},
                 {"g_loss": lambda s, *logits: -logits[1].mean(), "g_needs_real": True}):
        assert contract_problem("loss", type("New", (OldSignatureLoss,), body)) is None


def test_plugin_loss_with_the_old_signature_is_skipped_with_one_warning(monkeypatch):
    class Old(BlockConfig):
        type: Literal["acmeold.loss"] = "acmeold.loss"

    ep = _fake_entry_point(monkeypatch, "acmeold", lambda registry: registry.LOSS.register(Old, OldSignatureLoss))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins._load_one(ep)
    hits = [str(w.message) for w in caught if issubclass(w.category, plugins.PluginWarning)]
    assert len(hits) == 1 and "\n" not in hits[0]
    assert "loss 'acmeold.loss' (" in hits[0] and "g_loss(fake_logits) has the old one-argument signature" in hits[0]
    assert "g_loss(real_logits, fake_logits)" in hits[0] and "acmeold.loss" not in LOSS.names()


def test_parameter_free_attention_needs_no_reference():
    class Plain(nn.Module):
        parameter_free = True

        def forward(self, x):
            return x

    assert contract_problem("attention", Plain) is None
    assert contract_problem("attention", nn.Identity) is None  # identity: parameter-free by default
    assert "missing method 'reference'" in contract_problem("attention", type("P", (nn.Module,), {"forward": Plain.forward}))


def test_capability_flags_have_their_documented_defaults():
    from ganzoo.norms.batch import BatchNorm
    from ganzoo.norms.group import GroupNorm
    from ganzoo.regularizers.none import NoRegularizer
    from ganzoo.regularizers.r1 import R1

    assert flag("regularizer", NoRegularizer, "active") is False
    assert flag("regularizer", R1, "active") is True
    assert flag("norm", BatchNorm, "mixes_batch") is True
    assert flag("norm", GroupNorm, "mixes_batch") is False
    from ganzoo.norms.self_modulated_batch import SelfModulatedBatchNorm

    assert flag("norm", BatchNorm, "modulated_by_latent") is False
    assert flag("norm", SelfModulatedBatchNorm, "modulated_by_latent") is True
    bad = type("BadNorm", (nn.Module,), {"forward": lambda self, x, y=None: x, "modulated_by_latent": "yes"})
    assert contract_problem("norm", bad) == "flag 'modulated_by_latent' must be bool, got str (norm contract)"
    assert flag("attention", nn.Identity, "parameter_free") is True
    assert flag("attention", MixingAttention, "parameter_free") is False


def test_regularizer_active_replaces_testing_the_name_none():
    from ganzoo.registry import REGULARIZER

    for name in REGULARIZER.names():
        cfg = REGULARIZER.get(name).config()
        expect = name != "none"
        assert regularizer_active(name) is expect and regularizer_active(cfg) is expect
        assert regularizer_active(REGULARIZER.build(cfg)) is expect and regularizer_active(REGULARIZER.get(name).obj) is expect


def _fake_entry_point(monkeypatch, namespace: str, register) -> md.EntryPoint:
    """An entry point of the ``ganzoo.plugins`` group whose target is ``register`` (in a fake module)."""
    mod = types.ModuleType(f"_ganzoo_fake_{namespace}")
    mod.register = register
    monkeypatch.setitem(sys.modules, mod.__name__, mod)
    monkeypatch.setattr(plugins, "LOADED", dict(plugins.LOADED))  # the fake plugin's record goes after the test
    return md.EntryPoint(namespace, f"{mod.__name__}:register", plugins.GROUP)


def test_plugin_missing_a_method_is_skipped_with_one_warning(monkeypatch):
    class AcmeX(BlockConfig):
        type: Literal["acmex.x"] = "acmex.x"

    class Good(BlockConfig):
        type: Literal["acmex.good"] = "acmex.good"

    def register(registry):
        registry.LOSS.register(Good, FlippedHinge)  # fine on its own: rolled back with the plugin
        registry.ATTENTION.register(AcmeX, NoMapAttention)

    ep = _fake_entry_point(monkeypatch, "acmex", register)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plugins._load_one(ep)
    hits = [w for w in caught if issubclass(w.category, plugins.PluginWarning)]
    assert len(hits) == 1
    text = str(hits[0].message)
    assert "ganzoo plugin 'acmex'" in text and "\n" not in text
    assert "attention 'acmex.x' (" in text and "missing method 'attention_map' required by the attention contract" in text
    assert "acmex.good" not in LOSS.names() and not plugins.LOADED["acmex"].ok
    # and the kit reports the skipped plugin instead of checking nothing
    checks = list(iter_checks(plugin=plugins.LOADED["acmex"].distribution))
    assert [(c.kind, c.precision) for c in checks] == [("plugin", "load")]
    with pytest.raises(AssertionError, match="missing method 'attention_map'"):
        checks[0].run()


# ----------------------------------------------------------------------------- the property checks
def _entry(kind, cfg, cls):
    reg = Registry(kind)
    reg.register(cfg, cls)
    return reg.get(cfg.model_fields["type"].default)


def test_flipped_sign_d_loss_is_caught():
    with pytest.raises(AssertionError, match=r"d_loss does not fall as real logits rise"):
        check_loss(_entry("loss", _FlippedConfig, FlippedHinge))


def test_zero_gradient_g_loss_is_caught():
    with pytest.raises(AssertionError, match=r"zero_grad_test.g_loss has an all-zero gradient"):
        check_loss(_entry("loss", _ZeroGradConfig, ZeroGradG))


def test_flipped_sign_relativistic_g_loss_is_caught():
    # its D loss is right: only the two-argument G loss, called with the real logits, can catch it
    entry = _entry("loss", _FlippedRelConfig, FlippedRelativisticG)
    with pytest.raises(AssertionError, match=r"flipped_rel_test.g_loss does not fall as fake logits rise .*, real \["):
        check_loss(entry)


def test_g_loss_reading_undeclared_real_logits_is_caught():
    with pytest.raises(AssertionError, match=r"undeclared_test.g_loss fails with real_logits=None .* must set "
                                             r"g_needs_real = True"):
        check_loss(_entry("loss", _UndeclaredConfig, UndeclaredReal))
    # declared, the same maths passes: it is the relativistic_non_saturating loss
    check_loss(_entry("loss", _UndeclaredConfig, type("Declared", (UndeclaredReal,), {"g_needs_real": True})))


def test_batch_mixing_attention_is_caught():
    entry = _entry("attention", _MixingConfig, MixingAttention)
    with pytest.raises(AssertionError, match=r"mixing_test'.*sample 0's output changed .* mixes samples across the batch"):
        check_attention_block(entry, "cpu", torch.float32, shrink=False)


class _BatchMeanConfig(BlockConfig):
    type: Literal["batch_mean_test"] = "batch_mean_test"


class BatchMeanNorm(nn.Module):
    """Subtracts the batch's mean in both modes: fine in training mode only if declared, never in eval."""

    conditional = False

    def __init__(self, cfg=None, channels: int = 8, num_classes: int = 0) -> None:
        super().__init__()

    def forward(self, x, y=None):
        return x - x.mean(0, keepdim=True)


def test_batch_mixing_norm_is_caught_in_eval_mode_even_when_declared():
    from ganzoo.testing import check_norm_block

    entry = _entry("norm", _BatchMeanConfig, BatchMeanNorm)
    with pytest.raises(AssertionError, match=r"in train mode .* \(declare mixes_batch = True"):
        check_norm_block(entry, shrink=False)
    declared = _entry("norm", _BatchMeanConfig, type("Declared", (BatchMeanNorm,), {"mixes_batch": True}))
    with pytest.raises(AssertionError, match=r"in eval mode sample 0's output changed"):
        check_norm_block(declared, shrink=False)


def test_conditional_generator_that_ignores_its_labels_is_caught():
    from ganzoo.models.resnet_generator import ResNetGenerator, ResNetGeneratorConfig
    from ganzoo.testing import check_generator

    class DeafConfig(ResNetGeneratorConfig):
        type: Literal["deaf_test"] = "deaf_test"

    class DeafG(ResNetGenerator):
        def forward(self, z, y=None):
            return super().forward(z, None if y is None else torch.zeros_like(y))

    with pytest.raises(AssertionError, match=r"num_classes=3.*declares conditioning but its output does not change"):
        check_generator(_entry("generator", DeafConfig, DeafG))


def test_ganzoo_check_reports_each_broken_block_and_exits_1(capsys):
    regs = [(LOSS, _FlippedConfig, FlippedHinge), (LOSS, _ZeroGradConfig, ZeroGradG),
            (REGISTRIES["attention"], _MixingConfig, MixingAttention)]
    for reg, cfg, cls in regs:
        reg.register(cfg, cls)
    try:
        rc = cli.main(["check", "flipped_test", "zero_grad_test", "mixing_test", "hinge"])
    finally:
        for reg, cfg, _ in regs:
            reg.unregister(cfg.model_fields["type"].default)
    out = capsys.readouterr().out.splitlines()
    assert rc == 1
    rows = {name: [line for line in out if line.split()[2:3] == [name]]
            for name in ("hinge", "flipped_test", "zero_grad_test", "mixing_test")}
    assert len(rows["hinge"]) == 1 and rows["hinge"][0].startswith("PASS  loss")
    assert rows["flipped_test"][0].startswith("FAIL") and "d_loss does not fall as real logits rise" in rows["flipped_test"][0]
    assert rows["zero_grad_test"][0].startswith("FAIL") and "g_loss has an all-zero gradient" in rows["zero_grad_test"][0]
    assert len(rows["mixing_test"]) == 2  # cpu-fp32, cpu-autocast-bf16
    assert all(line.startswith("FAIL") and "mixes samples across the batch" in line for line in rows["mixing_test"])
    assert out[-1].startswith("5 checks: 1 passed, 4 failed")


def test_ganzoo_check_bad_arguments_exit_2(capsys):
    assert cli.main(["check", "sagn"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "unknown block 'sagn'; did you mean 'sagan'?" in err and "hinge" in err
    assert cli.main(["check", "--plugin", "no-such-dist"]) == 2
    assert "no installed ganzoo plugin from distribution 'no-such-dist'" in capsys.readouterr().err
    with pytest.raises(SelectionError):
        list(iter_checks(["attention:hinge"]))


def test_ganzoo_check_reasons_are_one_line():
    from ganzoo.commands.check import _reason

    assert _reason(AssertionError("x: wrong\nFalsifying example: ...")) == "x: wrong"
    assert _reason(ValueError("bad shape")) == "ValueError: bad shape"
    group = ExceptionGroup("Hypothesis found 2 distinct failures", [AssertionError("a"), TypeError("b")])
    assert _reason(group) == "a (and 1 more distinct failure)"


def test_ganzoo_check_without_hypothesis_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hypothesis", None)
    assert cli.main(["check", "hinge"]) == 2
    assert capsys.readouterr().err.strip() == "ganzoo check needs hypothesis: pip install 'ganzoo[testing]'"


def test_ganzoo_check_subprocess_passes_on_builtins(tmp_path):
    out = run_ganzoo("check", "hinge", "sagan", cwd=tmp_path, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert sum(line.startswith("PASS") for line in lines) == 3 and lines[-1].startswith("3 checks: 3 passed, 0 failed")
    assert not list(tmp_path.iterdir())  # no .hypothesis folder left where it ran
