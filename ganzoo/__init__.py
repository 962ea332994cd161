"""ganzoo: a modular GAN component zoo (SAGAN and its ablations from interchangeable blocks)."""
__version__ = "0.1.0"
