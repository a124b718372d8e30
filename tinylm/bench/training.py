"""``python -m tinylm.bench --train``: whole models, every backend, and PyTorch.

Both language models are built once per backend from the same seed, and PyTorch twins
(same modules, same parameter names) load the same weights, so the losses of the first
two training steps (the second one after a backward pass and an AdamW update) must agree
across all of them; a backend that disagrees is reported, and the command fails. Then training steps,
evaluation forwards and batch-1 sampling are timed *interleaved*, one call per
backend in turn (A B C A B C ...), so a slow moment of a noisy machine hits every
backend alike and the ratios hold. Each backend lives in its own process (spawned), so
no library's thread pool competes with another's; only one of them works at a time.
Peak memory is measured per backend in a fresh
process (``spawn``), as the growth of its peak resident set over building the model.
Every worker first calls ``tinylm.memory.keep_freed_memory()``, as ``tinylm.train`` does.
"""

from __future__ import annotations

import math
import multiprocessing
import resource
import statistics
import time

import numpy as np

import tinylm
from tinylm import backends, nn, optim
from tinylm.memory import keep_freed_memory
from tinylm.models import LSTMLanguageModel, TransformerLanguageModel
from tinylm.nn import functional as F

BLOCK = 3  # calls timed per backend per round
# Seconds of quiet before each block: a pool of threads that just worked keeps spinning
# for a while (OpenBLAS's for up to about 0.1 s), on the cores the next backend's process
# needs. Without the pause, the LSTM sampled at 2.1k tokens/s on the cython backend when
# it followed the numpy backend's block, and at 4.5-5.5k in a process of its own.
IDLE_BEFORE_BLOCK = 0.3
PRESETS = {
    "tiny": dict(vocab=32, batch=2, seq=8, width=8, layers=1, heads=2, sample=4),
    "small": dict(vocab=96, batch=16, seq=64, width=128, layers=2, heads=4, sample=32),
    # The default training run's sizes: LSTM embedding 128 / hidden 256, transformer d_model
    # 128 with 4 heads; 2 layers, batch 32 x 64 tokens (without dropout, so the losses can
    # be compared).
    "medium": dict(vocab=96, batch=32, seq=64, width=128, layers=2, heads=4, sample=32),
}


def build_tinylm(kind: str, p: dict):
    tinylm.manual_seed(0)
    if kind == "lstm":
        return LSTMLanguageModel(p["vocab"], p["width"], 2 * p["width"], p["layers"], dropout=0.0)
    return TransformerLanguageModel(p["vocab"], p["width"], p["heads"], p["layers"], max_len=p["seq"], dropout=0.0)


def build_torch(kind: str, p: dict, state: dict):
    """The PyTorch twin of ``build_tinylm(kind, p)``, with its weights. Like tinylm's
    models, both twins' ``forward(ids, state=None)`` return ``(logits, state)``."""
    import torch

    class LSTMTwin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = torch.nn.Embedding(p["vocab"], p["width"])
            self.lstm = torch.nn.LSTM(p["width"], 2 * p["width"], p["layers"], batch_first=True)
            self.fc = torch.nn.Linear(2 * p["width"], p["vocab"])

        def forward(self, ids, state=None):
            out, state = self.lstm(self.embedding(ids), state)
            return self.fc(out), state

    class Block(torch.nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.ln_1, self.ln_2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
            self.attn = torch.nn.MultiheadAttention(d, heads, batch_first=True)
            self.mlp_in, self.mlp_out = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

        def forward(self, x):
            n = self.ln_1(x)
            t = x.shape[1]
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            x = x + self.attn(n, n, n, attn_mask=mask, is_causal=True, need_weights=False)[0]
            return x + self.mlp_out(torch.nn.functional.gelu(self.mlp_in(self.ln_2(x)), approximate="tanh"))

    class TransformerTwin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            d = p["width"]
            self.embedding = torch.nn.Embedding(p["vocab"], d)
            self.blocks = torch.nn.ModuleList(Block(d, p["heads"]) for _ in range(p["layers"]))
            self.ln_f = torch.nn.LayerNorm(d)
            self.fc = torch.nn.Linear(d, p["vocab"])
            table = torch.from_numpy(nn.SinusoidalPositionalEncoding(d, p["seq"]).table).float()
            self.register_buffer("table", table, persistent=False)

        def forward(self, ids, state=None):
            x = self.embedding(ids) + self.table[: ids.shape[1]]
            for block in self.blocks:
                x = block(x)
            return self.fc(self.ln_f(x)), None

    model = LSTMTwin() if kind == "lstm" else TransformerTwin()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # strict: every name must match
    return model


class Runner:
    """One model on one backend: a training step, an evaluation forward, a sample."""

    def __init__(self, kind: str, backend: str, p: dict, batch: np.ndarray):
        self.kind, self.backend, self.p = kind, backend, p
        self.inputs, self.targets = batch[:, :-1], batch[:, 1:]
        reference = build_tinylm(kind, p)
        if backend == "torch":
            import torch

            self.model = build_torch(kind, p, reference.state_dict())
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
            self.inputs_t, self.targets_t = torch.from_numpy(self.inputs), torch.from_numpy(self.targets)
        else:
            self.model = reference
            if backend in backends.GPU_BACKENDS:
                self.model.to("cuda")
            self.optimizer = optim.AdamW(self.model.parameters(), lr=1e-3)

    def train_step(self) -> float:
        if self.backend == "torch":
            import torch

            logits, _ = self.model(self.inputs_t)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets_t.reshape(-1))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return loss.item()
        with tinylm.use_backend(self.backend):
            logits, _ = self.model(self.inputs)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), self.targets.reshape(-1))
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            return loss.item()

    def evaluate(self) -> None:
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                self.model(self.inputs_t)
            return
        with tinylm.use_backend(self.backend), tinylm.no_grad():
            self.model(self.inputs)

    def sample(self) -> None:
        """``sample`` tokens at batch 1, greedy: the LSTM carries its state, tinylm's
        transformer its key/value cache (the PyTorch twin reruns its context: a cached
        PyTorch loop is in benchmarks/transformer_generation.py). tinylm's models go through
        their ``stepper()``, as ``tinylm.generate`` does; the PyTorch twins through their forward."""
        steps = self.p["sample"]
        if self.backend == "torch":
            import torch

            with torch.no_grad():
                context, state = self.inputs_t[:1, :1], None
                for _ in range(steps):
                    if self.kind == "lstm":
                        logits, state = self.model(context[:, -1:], state)
                    else:
                        logits, _ = self.model(context[:, -self.p["seq"]:])
                    context = torch.cat([context, logits[:, -1:].argmax(-1)], dim=1)
            return
        with tinylm.use_backend(self.backend), tinylm.no_grad():
            stepper = self.model.stepper()
            logits, state = stepper.start(self.inputs[:1, :1])  # the first token: (1, V)
            token = None  # the token chosen last, which the next step reads
            for n in range(steps):
                if n > 0:
                    logits, state = stepper.step(np.array([token]), state)
                token = int(backends.to_device(logits, "cpu")[0].argmax())


def _rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process's address space, in MiB. Unlike
    ru_maxrss, VmHWM starts afresh at exec, so the parent's size does not leak in."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # elsewhere: the best there is


def _threads_in_this_process(backend: str, threads: int | None) -> int:
    """A spawned worker starts with every pool at its default: give it the parent's
    ``--threads`` (``machine.set_threads``), and say how many threads the backend's work
    runs on here (PyTorch's intra-op threads, NumPy's BLAS's, or tinylm's OpenMP team)."""
    from tinylm import kernels
    from tinylm.bench import machine

    if threads:
        machine.set_threads(threads)
    if backend == "torch":
        import torch

        return torch.get_num_threads()
    if backend == "numpy":  # its products run on NumPy's BLAS
        from threadpoolctl import threadpool_info

        counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
        return max(counts, default=1)
    return kernels.get_num_threads()


def _memory_child(kind, backend, p, steps, queue, threads=None):
    keep_freed_memory()
    _threads_in_this_process(backend, threads)
    rng = np.random.default_rng(0)
    batch = rng.integers(0, p["vocab"], size=(p["batch"], p["seq"] + 1))
    runner = Runner(kind, backend, p, batch)
    built = _rss_mib("VmRSS")
    for _ in range(steps):
        runner.train_step()
    queue.put((built, _rss_mib("VmHWM")))


def peak_memory(kind: str, backend: str, p: dict, steps: int = 3, threads: int | None = None) -> tuple[float, float]:
    """(RSS MiB once the model is built, peak RSS MiB over ``steps`` training steps), in a
    fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_memory_child, args=(kind, backend, p, steps, queue, threads))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    return result


def _worker(kind: str, backend: str, p: dict, registry: dict, connection, threads: int | None = None) -> None:
    """One backend in its own process: runs what the parent asks, reports times and losses.
    Separate processes keep each library's thread pools (OpenBLAS, OpenMP, PyTorch's) from
    competing with another's: in one shared process PyTorch ran at half its speed. The
    parent's kernel registry comes along, so kernels registered at run time are measured,
    and so does ``--threads``."""
    keep_freed_memory()  # every backend, PyTorch's too: the same allocator settings for all
    threads_here = _threads_in_this_process(backend, threads)
    backends.KERNELS.clear()
    backends.KERNELS.update(registry)
    batch = np.random.default_rng(0).integers(0, p["vocab"], size=(p["batch"], p["seq"] + 1))
    runner = Runner(kind, backend, p, batch)
    tasks = {"train": runner.train_step, "eval": runner.evaluate, "sample": runner.sample}
    connection.send(("ready", threads_here))
    while True:
        request = connection.recv()
        if request == "stop":
            return
        if request == "losses":  # the first two steps: forward, then backward + update, checked
            connection.send((runner.train_step(), runner.train_step()))
            continue
        task, calls = request
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            tasks[task]()
            times.append(time.perf_counter() - start)
        connection.send(times)


def _usable(backend: str) -> bool:
    if backend != "torch":
        return backends.is_usable(backend)
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def run_training(backend_names, preset: str, repeat: int, warmup: int, measure_memory: bool = True,
                 threads: int | None = None) -> list[dict]:
    p = PRESETS[preset]
    rows = []
    context = multiprocessing.get_context("spawn")
    for kind in ("lstm", "transformer"):
        workers = {}
        for backend in filter(_usable, backend_names):
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(kind, backend, p, dict(backends.KERNELS), child, threads),
                                      daemon=True)
            process.start()
            workers[backend] = (process, parent)
        try:
            threads_of = {backend: connection.recv()[1] for backend, (_, connection) in workers.items()}  # "ready"

            def ask(backend, request):
                workers[backend][1].send(request)
                return workers[backend][1].recv()

            # Two steps each: the first loss checks the forward pass, the second the backward
            # pass and the optimizer update in between (they are also warm-up steps).
            losses = {backend: ask(backend, "losses") for backend in workers}
            reference = losses.get("numpy", next(iter(losses.values())))
            for backend in workers:
                ask(backend, ("train", max(0, warmup - 1)))
            times = {(backend, task): [] for backend in workers for task in ("train", "eval", "sample")}
            for _ in range(repeat):  # interleaved rounds: every backend in turn, one at a time
                for task in ("train", "eval", "sample"):
                    for backend in workers:
                        # A short block of calls after a pause, the first one not counted
                        # (warm caches): the previous backend's thread pools have gone idle.
                        time.sleep(IDLE_BEFORE_BLOCK)
                        times[(backend, task)].extend(ask(backend, (task, BLOCK + 1))[1:])
        finally:
            for process, connection in workers.values():
                connection.send("stop")
                process.join(timeout=60)
        for backend in workers:
            first, second = losses[backend]
            row = {"model": kind, "backend": backend, "preset": preset, "threads": threads_of[backend],
                   "first_loss": first, "second_loss": second,
                   "correct": bool(math.isclose(first, reference[0], rel_tol=1e-4)
                                   and math.isclose(second, reference[1], rel_tol=1e-4))}
            for task, tokens in (("train", p["batch"] * p["seq"]), ("eval", p["batch"] * p["seq"]),
                                 ("sample", p["sample"])):
                median = statistics.median(times[(backend, task)])
                row[f"{task}_tokens_per_s"] = tokens / median
            if measure_memory:
                built, trained = peak_memory(kind, backend, p, threads=threads)
                row.update(peak_rss_mib=trained, training_growth_mib=trained - built)
            rows.append(row)
        numpy_row = next((row for row in rows if row["model"] == kind and row["backend"] == "numpy"), None)
        for row in rows:
            if row["model"] == kind and numpy_row:
                row["train_speedup_vs_numpy"] = row["train_tokens_per_s"] / numpy_row["train_tokens_per_s"]
    return rows
