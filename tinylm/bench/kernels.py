"""One benchmark case per registered kernel, and a second case for a kernel whose other use
is worth its own timing (the attention softmax over padded keys).

A case makes the kernel's inputs for a size, says how much work one call does (FLOPs
for compute-bound kernels, bytes moved for memory-bound ones), names the outputs to
check, and gives PyTorch's equivalent where there is one. Every implementation is
first run on the same inputs as the reference and compared; a wrong one is reported
as wrong and not timed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinylm import backends
from tinylm.bench.timing import summary, time_cpu, time_gpu

SIZES = ("tiny", "small", "medium", "large")


@dataclass
class Case:
    name: str
    dims: str  # what the three numbers of a size mean
    sizes: dict[str, tuple[int, ...]]
    make: Callable[[tuple[int, ...], np.random.Generator], tuple]  # size -> arguments (NumPy)
    work: Callable[[tuple[int, ...]], tuple[float, str]]  # size -> (amount, "flop" or "byte")
    outputs: Callable[[object, tuple], list]  # (result, arguments) -> arrays to compare
    # arguments -> a call using torch that returns the same outputs as ``outputs`` names
    torch: Callable[[tuple], Callable[[], tuple]] | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    kernel: str | None = None  # the registered kernel it times, when not ``name`` (another case of one kernel)

    @property
    def registered(self) -> str:
        return self.kernel or self.name


# ---------------------------------------------------------------------- the cases


def _embedding_args(size, rng):
    positions, vocab, dim = size
    return (rng.standard_normal((positions, dim)).astype(np.float32), rng.integers(0, vocab, positions), vocab)


def _embedding_torch(args):
    import torch

    grad, ids, vocab = torch.from_numpy(args[0]), torch.from_numpy(args[1]), args[2]
    return lambda: (torch.zeros(vocab, grad.shape[1]).index_add_(0, ids, grad),)


def _lstm_args(size, rng):
    steps, batch, hidden = size
    scale = 1 / np.sqrt(hidden)
    return (rng.standard_normal((steps, batch, 4 * hidden)).astype(np.float32),
            (scale * rng.standard_normal((4 * hidden, hidden))).astype(np.float32),
            rng.standard_normal((batch, hidden)).astype(np.float32) * 0.1,
            rng.standard_normal((batch, hidden)).astype(np.float32) * 0.1)


def _lstm_flops(size):
    steps, batch, hidden = size
    return steps * (2 * batch * hidden * 4 * hidden + 20 * batch * hidden), "flop"


def _lstm_torch(args):
    import torch

    x_proj, w_hh, h0, c0 = (torch.from_numpy(a) for a in args)

    def run():  # the same recurrence with torch ops, one step at a time
        with torch.no_grad():
            h, c, outputs = h0, c0, []
            w_hh_t = w_hh.T
            for t in range(x_proj.shape[0]):
                i, f, g, o = (x_proj[t] + h @ w_hh_t).chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outputs.append(h)
            return torch.stack(outputs), c

    return run


def _lstm_backward_args(size, rng):
    x_proj, w_hh, h0, c0 = _lstm_args(size, rng)
    from tinylm.reference.lstm import lstm_layer_forward

    hs, _, saved = lstm_layer_forward(x_proj, w_hh, h0, c0)
    d_hs = rng.standard_normal(hs.shape).astype(np.float32)
    return d_hs, rng.standard_normal(h0.shape).astype(np.float32), rng.standard_normal(c0.shape).astype(np.float32), \
        w_hh, h0, c0, saved


def _lstm_backward_flops(size):
    steps, batch, hidden = size
    forward, _ = _lstm_flops(size)
    return forward + steps * 2 * batch * 4 * hidden * hidden, "flop"  # + the one dW_hh product


def _stack_step_args(size, rng):
    layers, batch, hidden = size
    scale = 1 / np.sqrt(hidden)
    return (rng.standard_normal((batch, 4 * hidden)).astype(np.float32),
            0.1 * rng.standard_normal((layers, batch, hidden)).astype(np.float32),
            0.1 * rng.standard_normal((layers, batch, hidden)).astype(np.float32),
            (scale * rng.standard_normal((4 * hidden, hidden))).astype(np.float32),
            (scale * rng.standard_normal((layers - 1, 4 * hidden, 2 * hidden))).astype(np.float32),
            rng.standard_normal((layers - 1, 4 * hidden)).astype(np.float32))


def _stack_step_bytes(size):
    layers, batch, hidden = size  # the weights dominate: 4H x H, then 4H x 2H per later layer
    return 4.0 * (4 * hidden * hidden * (2 * layers - 1) + 4 * batch * hidden * (2 * layers + 1)), "byte"


def _stack_step_torch(args):
    import torch

    gates0, h, c, w_hh0, stacked, biases = (torch.from_numpy(a) for a in args)

    def cell(gates, c_prev):
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def run():  # the same step with torch ops, layer by layer
        with torch.no_grad():
            new_h, new_c = [None] * len(h), [None] * len(h)
            new_h[0], new_c[0] = cell(gates0 + h[0] @ w_hh0.T, c[0])
            for k in range(1, len(h)):
                x_and_h = torch.cat([new_h[k - 1], h[k]], dim=1)
                new_h[k], new_c[k] = cell(x_and_h @ stacked[k - 1].T + biases[k - 1], c[k])
            return torch.stack(new_h), torch.stack(new_c)

    return run


def _int8_matmul_args(size, rng):
    from tinylm.reference.int8_matmul import quantize_per_channel

    batch, rows, cols = size
    weight = rng.standard_normal((rows, cols)).astype(np.float32) / np.sqrt(cols)
    return (rng.standard_normal((batch, cols)).astype(np.float32), *quantize_per_channel(weight))


def _int8_matmul_bytes(size):
    batch, rows, cols = size  # the int8 weights dominate at batch 1; + their scales, x and y
    return 1.0 * rows * cols + 4.0 * (rows + batch * cols + batch * rows), "byte"


def _float_product_torch(args):
    """The float32 product on the same shapes, x @ Wᵀ with W = scale · q dequantized once
    beforehand: what the int8 kernel replaces (4x the weight bytes)."""
    import torch

    from tinylm.reference.int8_matmul import dequantize

    x, weight = torch.from_numpy(args[0]), torch.from_numpy(dequantize(args[1], args[2]))
    return lambda: (x @ weight.T,)


def _attention_args(size, rng):
    heads, steps, head_size = size
    q, k, v = (rng.standard_normal((heads, steps, head_size)).astype(np.float32) for _ in range(3))
    return q, k, v, 1 / np.sqrt(head_size)


def _attention_flops(size):
    heads, steps, head_size = size  # q kᵀ and p v, each 2 T² hs (the causal half included)
    return 4.0 * heads * steps * steps * head_size, "flop"


def _attention_torch(args):
    import torch

    q, k, v = (torch.from_numpy(a)[None] for a in args[:3])
    return lambda: (torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, scale=args[3])[0],)


def _attention_backward_args(size, rng):
    from tinylm.reference.causal_attention import causal_attention_forward

    q, k, v, scale = _attention_args(size, rng)
    out, logsumexp = causal_attention_forward(q, k, v, scale)
    return rng.standard_normal(q.shape).astype(np.float32), q, k, v, out, logsumexp, scale


def _adam_args(size, rng):
    (count,) = size
    param, grad = rng.standard_normal(count).astype(np.float32), rng.standard_normal(count).astype(np.float32)
    exp_avg = rng.standard_normal(count).astype(np.float32) * 0.1
    exp_avg_sq = rng.random(count).astype(np.float32) * 0.1
    return param, grad, exp_avg, exp_avg_sq, 10, 1e-3, 0.9, 0.999, 1e-8, 0.01, True


def _adam_torch(args):
    """torch.optim.AdamW (fused where this build has it) from the same moments at the same step."""
    import torch

    param_array, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps, weight_decay, _ = args
    param = torch.nn.Parameter(torch.from_numpy(param_array))
    param.grad = torch.from_numpy(grad)
    optimizer = torch.optim.AdamW([param], lr=lr, betas=(beta1, beta2), eps=eps, weight_decay=weight_decay, fused=True)
    state = optimizer.state[param]
    state.update(step=torch.tensor(float(step - 1)), exp_avg=torch.from_numpy(exp_avg),
                 exp_avg_sq=torch.from_numpy(exp_avg_sq))

    def run():
        optimizer.step()
        return param.detach(), state["exp_avg"], state["exp_avg_sq"]

    return run


def _gather_args(size, rng):
    positions, vocab, dim = size
    return rng.standard_normal((vocab, dim)).astype(np.float32), rng.integers(0, vocab, positions)


def _gather_torch(args):
    import torch

    weight, ids = torch.from_numpy(args[0]), torch.from_numpy(args[1])
    return lambda: (torch.nn.functional.embedding(ids, weight),)


def _cross_entropy_args(size, rng):
    rows, classes = size
    targets = rng.integers(0, classes, rows)
    targets[::17] = -100  # some ignored rows, as padding would give
    return (3 * rng.standard_normal((rows, classes))).astype(np.float32), targets, -100


def _cross_entropy_backward_args(size, rng):
    logits, targets, ignore_index = _cross_entropy_args(size, rng)
    from tinylm.reference.cross_entropy import cross_entropy_forward

    _, logsumexp = cross_entropy_forward(logits, targets, ignore_index)
    grad_losses = np.full(logits.shape[0], 1.0 / logits.shape[0], np.float32)  # a mean's gradient
    return grad_losses, logits, targets, logsumexp, ignore_index


def _softmax_args(size, rng):
    rows, length = size  # rows = batch x heads of causal (length x length) score matrices
    return rng.standard_normal((rows, length, length)).astype(np.float32) * 4, 0.125, None, True


def _softmax_torch(args):
    import torch

    scores, scale = torch.from_numpy(args[0]), args[1]
    length = scores.shape[-1]
    hidden = ~torch.tril(torch.ones(length, length, dtype=torch.bool))
    return lambda: (torch.softmax((scores * scale).masked_fill(hidden, float("-inf")), dim=-1),)


PADDED_HEADS = 4


def _padded_softmax_args(size, rng):
    """Non-causal attention over padded sentences (an encoder, or cross-attention): batch rows
    of (heads, length, length) scores, each row's keys past its sentence's length padded."""
    batch, length = size
    scores = rng.standard_normal((batch, PADDED_HEADS, length, length)).astype(np.float32) * 4
    lengths = rng.integers(1, length + 1, batch)  # each sentence's true length
    padding = np.arange(length) >= lengths[:, None]  # (B, S): True = a padding key
    return scores, 0.125, None, False, padding


def _padded_softmax_torch(args):
    import torch

    scores, scale, padding = torch.from_numpy(args[0]), args[1], torch.from_numpy(args[4])
    hidden = padding[:, None, None, :]  # (B, 1, 1, S): the same keys for every head and query
    return lambda: (torch.softmax((scores * scale).masked_fill(hidden, float("-inf")), dim=-1),)


def _softmax_backward_args(size, rng):
    from tinylm.reference.attention_softmax import attention_softmax_forward

    scores, scale, mask, causal = _softmax_args(size, rng)
    probs = attention_softmax_forward(scores, scale, mask, causal)
    return rng.standard_normal(probs.shape).astype(np.float32), probs, scale


def _softmax_backward_torch(args):
    import torch

    grad, probs, scale = torch.from_numpy(args[0]), torch.from_numpy(args[1]), args[2]
    return lambda: (torch._softmax_backward_data(grad, probs, -1, probs.dtype) * scale,)


def _layer_norm_args(size, rng):
    rows, dim = size
    return (rng.standard_normal((rows, dim)).astype(np.float32), rng.standard_normal(dim).astype(np.float32),
            rng.standard_normal(dim).astype(np.float32), 1e-5)


def _layer_norm_torch(args):
    import torch

    x, weight, bias = (torch.from_numpy(a) for a in args[:3])
    return lambda: (torch.nn.functional.layer_norm(x, weight.shape, weight, bias, args[3]),)


def _layer_norm_backward_args(size, rng):
    from tinylm.reference.layer_norm import layer_norm_forward

    x, weight, bias, eps = _layer_norm_args(size, rng)
    _, mean, rstd = layer_norm_forward(x, weight, bias, eps)
    return rng.standard_normal(x.shape).astype(np.float32), x, weight, mean, rstd


def _layer_norm_backward_torch(args):
    import torch

    grad, x, weight, mean, rstd = (torch.from_numpy(a) for a in args)
    bias = torch.zeros_like(weight)
    return lambda: torch.ops.aten.native_layer_norm_backward(
        grad, x, [x.shape[1]], mean[:, None], rstd[:, None], weight, bias, [True, True, True])


def _dropout_args(size, rng):
    (count,) = size
    return rng.standard_normal(count).astype(np.float32), 0.1, 12345


def _gelu_args(size, rng):
    (count,) = size
    return (rng.standard_normal(count).astype(np.float32),)


def _gelu_torch(args):
    import torch

    x = torch.from_numpy(args[0])
    return lambda: (torch.nn.functional.gelu(x, approximate="tanh"),)


def _gelu_backward_args(size, rng):
    (count,) = size
    return rng.standard_normal(count).astype(np.float32), rng.standard_normal(count).astype(np.float32)


ROWS_BY_CLASSES = {"tiny": (16, 7), "small": (2048, 96), "medium": (2048, 8192), "large": (2048, 32768)}
ROWS_BY_WIDTH = {"tiny": (16, 8), "small": (2048, 128), "medium": (8192, 512), "large": (32768, 1024)}


CASES = {
    "embedding_forward": Case(
        "embedding_forward", "positions x vocab x dim",
        {"tiny": (64, 16, 8), "small": (2048, 128, 64), "medium": (8192, 8192, 256), "large": (16384, 32768, 512)},
        _gather_args, lambda s: (8.0 * s[0] * s[2] + 8 * s[0], "byte"),  # read and write each row, read ids
        lambda result, args: [result], _gather_torch),
    "embedding_backward": Case(
        "embedding_backward", "positions x vocab x dim",
        {"tiny": (64, 16, 8), "small": (2048, 128, 64), "medium": (8192, 8192, 256), "large": (16384, 32768, 512)},
        _embedding_args,
        lambda s: (4.0 * (s[0] * s[2] + 2 * s[1] * s[2]) + 8 * s[0], "byte"),  # read rows, zero + update table
        lambda result, args: [result], _embedding_torch),
    "lstm_layer_forward": Case(
        "lstm_layer_forward", "steps x batch x hidden",
        {"tiny": (3, 2, 8), "small": (16, 8, 64), "medium": (64, 32, 256), "large": (128, 64, 512)},
        _lstm_args, _lstm_flops, lambda result, args: [result[0], result[1]], _lstm_torch),
    "lstm_stack_step": Case(
        "lstm_stack_step", "layers x batch x hidden",
        {"tiny": (1, 1, 8), "small": (2, 1, 64), "medium": (2, 1, 256), "large": (3, 1, 512)},
        _stack_step_args, _stack_step_bytes, lambda result, args: list(result), _stack_step_torch),
    "int8_matmul": Case(
        "int8_matmul", "batch x out x in (int8 weights; torch: the float32 product)",
        {"tiny": (1, 24, 40), "small": (1, 1024, 256), "medium": (1, 1024, 512), "large": (1, 4096, 1024)},
        _int8_matmul_args, _int8_matmul_bytes, lambda result, args: [result], _float_product_torch,
        rtol=1e-4, atol=1e-4),
    "causal_attention_forward": Case(
        "causal_attention_forward", "heads x steps x head size",
        {"tiny": (2, 8, 4), "small": (32, 64, 32), "medium": (128, 64, 32), "large": (128, 256, 64)},
        # out only: PyTorch's SDPA does not return the log-sum-exp (the tests check it)
        _attention_args, _attention_flops, lambda result, args: [result[0]], _attention_torch),
    "causal_attention_backward": Case(
        "causal_attention_backward", "heads x steps x head size",
        {"tiny": (2, 8, 4), "small": (32, 64, 32), "medium": (128, 64, 32), "large": (128, 256, 64)},
        _attention_backward_args, lambda s: (2.5 * _attention_flops(s)[0], "flop"),  # five products
        lambda result, args: list(result), None, rtol=1e-3, atol=1e-4),
    "lstm_layer_backward": Case(
        "lstm_layer_backward", "steps x batch x hidden",
        {"tiny": (3, 2, 8), "small": (16, 8, 64), "medium": (64, 32, 256), "large": (128, 64, 512)},
        _lstm_backward_args, _lstm_backward_flops, lambda result, args: list(result), None, rtol=1e-3, atol=1e-4),
    "cross_entropy_forward": Case(
        "cross_entropy_forward", "rows x classes", ROWS_BY_CLASSES, _cross_entropy_args,
        lambda s: (4.0 * s[0] * s[1], "byte"),  # read the logits (once from memory)
        lambda result, args: [result[0], result[1]],
        None),
    "cross_entropy_backward": Case(
        "cross_entropy_backward", "rows x classes", ROWS_BY_CLASSES, _cross_entropy_backward_args,
        lambda s: (8.0 * s[0] * s[1], "byte"),  # read the logits, write their gradient
        lambda result, args: [result], None),
    "attention_softmax_forward": Case(
        "attention_softmax_forward", "(batch x heads) x length",
        {"tiny": (2, 8), "small": (32, 64), "medium": (128, 64), "large": (64, 512)},
        _softmax_args, lambda s: (8.0 * s[0] * s[1] * s[1], "byte"),  # read scores, write probabilities
        lambda result, args: [result], _softmax_torch),
    "attention_softmax_forward_padded": Case(
        "attention_softmax_forward_padded", f"batch x length ({PADDED_HEADS} heads, padded keys)",
        {"tiny": (2, 8), "small": (8, 64), "medium": (32, 64), "large": (16, 512)},
        _padded_softmax_args, lambda s: (8.0 * PADDED_HEADS * s[0] * s[1] * s[1], "byte"),  # read scores, write p
        lambda result, args: [result], _padded_softmax_torch, kernel="attention_softmax_forward"),
    "attention_softmax_backward": Case(
        "attention_softmax_backward", "(batch x heads) x length",
        {"tiny": (2, 8), "small": (32, 64), "medium": (128, 64), "large": (64, 512)},
        _softmax_backward_args, lambda s: (12.0 * s[0] * s[1] * s[1], "byte"),  # read g and p, write ds
        lambda result, args: [result], _softmax_backward_torch),
    "layer_norm_forward": Case(
        "layer_norm_forward", "rows x width", ROWS_BY_WIDTH, _layer_norm_args,
        lambda s: (8.0 * s[0] * s[1], "byte"),  # read x, write y
        lambda result, args: [result[0]], _layer_norm_torch),
    "layer_norm_backward": Case(
        "layer_norm_backward", "rows x width", ROWS_BY_WIDTH, _layer_norm_backward_args,
        lambda s: (12.0 * s[0] * s[1], "byte"),  # read dy and x, write dx
        lambda result, args: list(result), _layer_norm_backward_torch, rtol=1e-3, atol=1e-3),
    "dropout_forward": Case(
        "dropout_forward", "elements",
        {"tiny": (1000,), "small": (65536,), "medium": (1 << 20,), "large": (1 << 24,)},
        _dropout_args, lambda s: (9.0 * s[0], "byte"),  # read x, write y and the byte mask
        lambda result, args: [result[0], result[1]], None),  # PyTorch's mask cannot match ours
    "gelu_forward": Case(
        "gelu_forward", "elements",
        {"tiny": (1000,), "small": (65536,), "medium": (1 << 20,), "large": (1 << 24,)},
        _gelu_args, lambda s: (8.0 * s[0], "byte"), lambda result, args: [result], _gelu_torch),
    "gelu_backward": Case(
        "gelu_backward", "elements",
        {"tiny": (1000,), "small": (65536,), "medium": (1 << 20,), "large": (1 << 24,)},
        _gelu_backward_args, lambda s: (12.0 * s[0], "byte"), lambda result, args: [result], None),
    "adam_update": Case(
        "adam_update", "parameters",
        {"tiny": (1000,), "small": (65536,), "medium": (1 << 20,), "large": (1 << 24,)},
        _adam_args, lambda s: (4.0 * 7 * s[0], "byte"),  # read p, g, m, v; write p, m, v
        lambda result, args: [args[0], args[2], args[3]], _adam_torch),  # updated in place
}


# ------------------------------------------------------------------- running a case


def _to_device(args, xp):
    def move(a):
        if isinstance(a, np.ndarray):
            return xp.asarray(a)
        if isinstance(a, tuple):
            return tuple(move(x) for x in a)
        return a

    return tuple(move(a) for a in args)


def _to_numpy(a):
    return a.get() if backends.is_gpu_array(a) else np.asarray(a)


def implementation(case: Case, backend: str):
    """(callable on arguments, array module) for ``backend``, or None when it has no
    kernel of its own (it would only rerun the reference) or is not usable here."""
    if backend == "torch":
        try:
            import torch  # noqa: F401
        except ImportError:  # PyTorch is optional: no column for it then
            return None
        return None if case.torch is None else ("torch", np)
    if not backends.is_usable(backend):
        return None
    if backend in backends.GPU_BACKENDS:
        import cupy

        fn = backends.kernel_for(case.registered, backend, fallback=backend == "cupy")
        return None if fn is None else (fn, cupy)
    fn = backends.kernel_for(case.registered, backend, fallback=backend == "numpy")
    return None if fn is None else (fn, np)


def run_case(case: Case, size_name: str, size: tuple, backend_names, warmup: int, repeat: int,
             roofs: dict) -> list[dict]:
    rng = np.random.default_rng(0)
    arguments = case.make(size, rng)
    reference = backends.kernel_for(case.registered, "numpy")
    expected_args = copy.deepcopy(arguments)
    expected = [_to_numpy(a) for a in case.outputs(reference(*expected_args), expected_args)]
    amount, unit = case.work(size)
    rows, reference_median = [], None
    for backend in backend_names:
        found = implementation(case, backend)
        if found is None:
            continue
        fn, xp = found
        # Each backend as a user gets it: the cython one holds NumPy's BLAS at one thread
        # (tinylm/backends.py), the others give it its own count; PyTorch next to the numpy one.
        with backends.use_backend(backend if backend in backends.BACKENDS else "numpy"):
            row = {"kernel": case.name, "size": size_name, "shape": "x".join(map(str, size)), "dims": case.dims,
                   "backend": backend}
            if backend == "torch":
                got = [t.detach().numpy() for t in case.torch(copy.deepcopy(arguments))()]
                call = case.torch(copy.deepcopy(arguments))
                timer = time_cpu
            else:
                checked_args = _to_device(copy.deepcopy(arguments), xp)
                got = [_to_numpy(a) for a in case.outputs(fn(*checked_args), checked_args)]
                device_args = _to_device(copy.deepcopy(arguments), xp)
                call = lambda fn=fn, a=device_args: fn(*a)  # noqa: E731
                timer = time_gpu if xp is not np else time_cpu
            correct = len(got) == len(expected) and all(
                g.shape == e.shape and np.allclose(g, e, rtol=case.rtol, atol=case.atol) for g, e in zip(got, expected))
            row["correct"] = bool(correct)
            if correct:
                timing = summary(timer(call, warmup, repeat))
                row.update(timing)
                if backend == "numpy":
                    reference_median = timing["median_s"]
                rate = amount / timing["median_s"]
                if unit == "flop":
                    row.update(gflops=rate / 1e9, roof_fraction=rate / 1e9 / roofs["sgemm_gflops"])
                else:
                    row.update(gbs=rate / 1e9, roof_fraction=rate / 1e9 / roofs["copy_gbs"])
        rows.append(row)
    for row in rows:
        if reference_median and row.get("median_s"):
            row["speedup_vs_numpy"] = reference_median / row["median_s"]
    return rows


def parse_sizes(text: str) -> list[tuple[str, tuple[int, ...] | None]]:
    """"small,large" -> presets; "64x32x256" -> an explicit shape, read as each kernel's dims."""
    sizes = []
    for part in text.split(","):
        part = part.strip()
        if part in SIZES:
            sizes.append((part, None))
        else:
            try:
                sizes.append((part, tuple(int(n) for n in part.split("x"))))
            except ValueError:
                raise ValueError(f"--sizes: {part!r} is neither a preset ({', '.join(SIZES)}) "
                                 "nor a shape like 64x32x256") from None
    return sizes


def run_kernels(names, size_specs, backend_names, warmup: int, repeat: int, roofs: dict) -> list[dict]:
    rows, skipped = [], []
    for name in names:
        case = CASES[name]
        for size_name, explicit in size_specs:
            size = explicit if explicit is not None else case.sizes[size_name]
            if len(size) != len(case.sizes["tiny"]):  # an explicit shape meant for other kernels
                skipped.append(f"{case.name} (takes {case.dims})")
                continue
            rows.extend(run_case(case, size_name, size, backend_names, warmup, repeat, roofs))
    if not rows and skipped:
        raise ValueError(f"--sizes: no kernel takes {', '.join(n for n, _ in size_specs)}: {'; '.join(skipped)}")
    return rows
