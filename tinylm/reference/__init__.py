"""The reference kernels: plain array code, NumPy/CuPy-generic, written to be read.

Each function here is the oracle for the fast kernels of the same name in
``tinylm.kernels.cpu`` (Cython) and ``tinylm.kernels.cuda`` (CUDA); the tests compare
them. ``tinylm.backends.KERNELS`` says which implementation serves which backend.
"""
