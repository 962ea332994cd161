"""Discriminator regularizers (registry ``REGULARIZER``), one per file.

Contract (``ganzoo/contracts.py``, in full in ``docs/plugins.md``): ``cls(cfg)``;
``penalty(D, real, fake, y) -> scalar`` with its weight included, to be added to D's loss; attribute
``needs_real_grad`` (see ``_input_grad.py``). ``y`` (class labels or ``None``) is passed to ``D``
unchanged; loops pass the real labels and generate fakes from the same labels. Optional flags:
``uses_logits`` (the trainer hands over the images D's loss saw and its logits, as the keywords
``real_logits``/``fake_logits``: ``lecam``, ``bcr``), ``runs_d``, ``graph_safe`` (``train.cuda_graph``)
and ``stateful`` (``state_dict``/``load_state_dict``/``to``: state saved in checkpoints, ``lecam``).
"""
