"""Differentiable augmentations (registry ``AUGMENT``), one per file: DiffAugment (Zhao et al. 2020).

A recipe's ``augment: [color, translation, cutout]`` applies these blocks, in order, to every image D
sees: the real and the fake batch of D's update and the fakes of G's update. They are differentiable
in the image, so G's gradient flows through them, and random per sample (fresh parameters on every
call, drawn on the images' device: a CUDA graph replays them with new values each time).

Contract (see :class:`ganzoo.augment._common.Augment`): ``cls(cfg)`` is an ``nn.Module`` without
parameters; ``sample_params(shape, device, generator=None) -> dict[str, Tensor]`` draws one set
of parameters per image of a batch of that ``[N, C, H, W]`` shape (on the device, no host read); ``apply(x, params) -> Tensor`` is differentiable in ``x`` (``[N, C, H, W]``
images in ``[-1, 1]``, any float dtype, kept); ``forward(x) = apply(x, sample_params(x.shape, x.device))``;
``reference(x, params)`` computes ``apply`` plainly, image by image, in float64 (what the property
tests compare against).
"""
