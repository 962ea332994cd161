"""Adversarial losses (registry ``LOSS``), one per file.

Contract: ``cls(cfg)``; ``d_loss(real_logits, fake_logits) -> scalar`` (minimised by D) and
``g_loss(real_logits, fake_logits) -> scalar`` (minimised by G), the same order. ``g_loss`` gets
``real_logits=None`` unless the loss sets ``g_needs_real = True`` (the relativistic losses): then
the trainer runs D on a batch of augmented real images in G's update too, without autograd, so they
are constants for G. Logits have any shape (usually ``[B]``); both losses are means over all
elements, computed in float32 outside autocast (see ``_fp32.py``).
"""
