"""Discriminator regularizers (registry ``REGULARIZER``), one per file.

Contract: ``cls(cfg)``; ``penalty(D, real, fake, y) -> scalar`` with its weight included, to be added
to D's loss; attribute ``needs_real_grad`` (see ``_input_grad.py``). ``y`` (class labels or ``None``)
is passed to ``D`` unchanged; loops pass the real labels and generate fakes from the same labels.
"""
