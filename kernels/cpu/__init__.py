"""Cython kernels for the CPU (``tinylm.kernels.cpu.<name>``), one file per kernel family."""
