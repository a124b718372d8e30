"""CUDA kernels (``kernels/cuda/*.cu``), installed as ``tinylm.kernels.cuda``.

Each ``<family>.cu`` has a Python module ``<family>.py`` beside it whose functions
are drop-ins for the reference kernels of the same names in ``tinylm.reference``:
they check their inputs, then launch the kernel through ``cupy.RawModule`` when given
CuPy arrays, or through the CPU emulation (``tinylm_cuda_emulation.h``, built with
the host C++ compiler and OpenMP) when given NumPy arrays. See README.md here.

Importing this package imports neither CuPy nor a compiler: compilation happens on a
kernel's first launch and is cached.
"""
