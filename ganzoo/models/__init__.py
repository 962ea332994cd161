"""Generator and discriminator backbones (registries ``GENERATOR`` and ``DISCRIMINATOR``).

``resnet_generator.py`` and ``resnet_discriminator.py`` hold the SNGAN/SAGAN-style ResNets (type
``resnet`` in both registries). Helpers: ``_arch.py`` (the per-resolution architecture tables),
``_layers.py`` (layer factories built from a weight norm, orthogonal init, the residual blocks),
``_norm.py`` (the unconditional counterpart of a class-conditional norm), ``_table.py`` (prints
the tables and parameter counts of ``docs/models.md``).
"""
