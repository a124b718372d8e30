"""``python -m tinylm.bench``: what each kernel buys, measured.

- ``machine.py``: the report header (CPU, BLAS, threads, versions, GPU) and the roofs
  measured in the same run: BLAS sgemm GFLOP/s and large-copy GB/s.
- ``timing.py``: timing a call, on the CPU (perf_counter) or the GPU (CUDA events).
- ``kernels.py``: one case per registered kernel: inputs per size, work (FLOPs or
  bytes), PyTorch's equivalent; checked against the reference before it is timed.
- ``training.py``: ``--train``, whole models on every backend and on PyTorch, interleaved.
- ``report.py``: Markdown on stdout, CSV, JSON and PNG charts in ``--out``.
"""
