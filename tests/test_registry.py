"""Registry behaviour: lookup errors with suggestions, no silent overwrite, globbing, building."""
from __future__ import annotations

import functools
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from ganzoo.config import BlockConfig
from ganzoo.registry import ATTENTION, REGISTRIES, Registry, RegistryError, UnknownBlockError, registry


class _AlphaConfig(BlockConfig):
    """Alpha test block."""

    type: Literal["alpha"] = "alpha"
    width: int = Field(4, ge=1)


class _AlphaBetaConfig(BlockConfig):
    type: Literal["alpha_beta"] = "alpha_beta"


class _Block:
    """A block built from a config and runtime arguments."""

    def __init__(self, cfg, channels=0, scale=1):
        self.cfg, self.channels, self.scale = cfg, channels, scale


@pytest.fixture
def reg():
    r = Registry("widget")
    r.register(_AlphaConfig, _Block)
    r.register(_AlphaBetaConfig)(type("AlphaBeta", (_Block,), {"__doc__": "Second block.\nMore."}))
    return r


def test_every_kind_has_a_registry():
    assert {"attention", "norm", "loss", "regularizer", "generator", "discriminator", "dataset", "metric"} <= set(
        REGISTRIES
    )


def test_unknown_name_lists_known_and_suggests(reg):
    with pytest.raises(UnknownBlockError) as exc:
        reg.get("alpah")
    msg = str(exc.value)
    assert msg == "unknown widget 'alpah'; did you mean 'alpha'? known: alpha, alpha_beta"


def test_unknown_name_without_close_match(reg):
    with pytest.raises(UnknownBlockError, match=r"^unknown widget 'zzz'; known: alpha, alpha_beta$"):
        reg.get("zzz")


def test_builtin_attention_suggestion():
    with pytest.raises(UnknownBlockError, match=r"unknown attention 'non'; did you mean 'none'\?"):
        ATTENTION.get("non")


def test_unknown_kind():
    with pytest.raises(UnknownBlockError, match="did you mean 'attention'"):
        registry("atention")


def test_duplicate_name_is_an_error_not_an_overwrite(reg):
    before = reg.get("alpha").obj
    with pytest.raises(RegistryError, match="already registered by builtin"):
        reg.register(_AlphaConfig, object)
    assert reg.get("alpha").obj is before


def test_builtin_names_have_no_dots():
    class Dotted(BlockConfig):
        type: Literal["x.y"] = "x.y"

    with pytest.raises(RegistryError, match="must not contain '.'"):
        Registry("widget").register(Dotted, _Block)


def test_config_must_be_a_blockconfig():
    class Plain(BaseModel):
        type: Literal["plain"] = "plain"

    with pytest.raises(RegistryError, match="must subclass ganzoo.config.BlockConfig"):
        Registry("widget").register(Plain, _Block)
    with pytest.raises(RegistryError, match="must be a pydantic model"):
        Registry("widget").register(dict, _Block)


def test_config_tag_must_be_a_single_literal():
    class NoLiteral(BlockConfig):
        type: str = "free"

    with pytest.raises(TypeError, match="Literal"):
        Registry("widget").register(NoLiteral, _Block)


def test_glob_listing_and_docs(reg):
    assert reg.names() == ["alpha", "alpha_beta"]
    assert reg.names("alpha_*") == ["alpha_beta"]
    assert reg.names("*beta") == ["alpha_beta"]
    assert reg.names("nomatch*") == []
    alpha, beta = reg.list()
    assert alpha.doc == "A block built from a config and runtime arguments."
    assert beta.doc == "Second block."
    assert alpha.source == "builtin"


def test_build_from_name_mapping_config_class_and_partial(reg):
    b = reg.build("alpha", channels=3)
    assert (b.cfg.width, b.channels) == (4, 3)
    b = reg.build({"type": "alpha", "width": 7}, 5)
    assert (b.cfg.width, b.channels) == (7, 5)
    b = reg.build(_AlphaConfig(width=2), channels=1)
    assert b.cfg.width == 2
    b = reg.build(_Block, channels=9)
    assert b.cfg == _AlphaConfig()
    b = reg.build(functools.partial(_Block, scale=3), channels=2)
    assert (b.scale, b.channels) == (3, 2)


def test_build_rejects_bad_field_values(reg):
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        reg.build({"type": "alpha", "width": 0})
    with pytest.raises(ValidationError):
        reg.build({"type": "alpha", "widht": 3})  # extra="forbid"
    with pytest.raises(RegistryError, match="has no 'type'"):
        reg.build({"width": 3})
