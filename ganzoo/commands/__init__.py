"""Sub-commands of the ``ganzoo`` CLI, one module each (see :mod:`ganzoo.cli`)."""
