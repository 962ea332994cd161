"""Property checks any block (a plugin's too) can be run through, with hypothesis.

    from ganzoo.registry import ATTENTION
    from ganzoo.testing import check_attention_block

    def test_my_attention():
        check_attention_block(ATTENTION.get("example.my_attention"), "cpu", torch.float32)

Each check builds the block from its kind's contract only (``ganzoo/contracts.py``, stated in full in
docs/plugins.md), draws small shapes with hypothesis (``max_examples`` ~10, no deadline, no example
database) and raises ``AssertionError`` with a one-line reason first. :mod:`ganzoo.testing.conformance`
lists every check of every installed block (``iter_checks``): the test suite and ``ganzoo check``
run that list. Needs ``hypothesis`` (the ``testing`` extra: ``pip install 'ganzoo[testing]'``).
"""
from .augment import check_augment
from .conformance import iter_checks
from .layers import (
    assert_batch_independent,
    check_attention_block,
    check_norm_block,
    check_permutation_equivariance,
    check_weight_norm,
)
from .losses import check_loss, check_loss_direction, check_regularizer
from .models import check_discriminator, check_generator
from .strategies import TOLERANCE, assert_rel_close, rel_error, run_property, tolerance

__all__ = [
    "check_augment",
    "check_attention_block",
    "check_norm_block",
    "check_weight_norm",
    "check_permutation_equivariance",
    "check_loss",
    "check_loss_direction",
    "assert_batch_independent",
    "iter_checks",
    "check_regularizer",
    "check_generator",
    "check_discriminator",
    "TOLERANCE",
    "tolerance",
    "rel_error",
    "assert_rel_close",
    "run_property",
]
