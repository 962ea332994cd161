"""Adversarial losses (registry ``LOSS``), one per file.

Contract: ``cls(cfg)``; ``d_loss(real_logits, fake_logits) -> scalar`` (minimised by D) and
``g_loss(fake_logits) -> scalar`` (minimised by G). Logits have any shape (usually ``[B]``); both
losses are means over all elements, computed in float32 outside autocast (see ``_fp32.py``).
"""
