"""Attention blocks (registry kind ``attention``): one file per variant."""
