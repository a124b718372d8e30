"""Running a tinylm module and its PyTorch twin on the same weights and inputs."""

from __future__ import annotations

import numpy as np

import tinylm
from tinylm.gradcheck import _flatten as flat  # nested outputs such as LSTM's (y, (h, c))

# Tolerances for "equal to PyTorch": float64 agrees to rounding; float32 sums in a
# different order, so the last few bits differ and errors grow with the depth of the graph.
TOLERANCES = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=2e-4, atol=2e-5)}


def copy_weights_to_torch(module, torch_module) -> None:
    import torch

    torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in module.state_dict().items()})


def run_both(module, torch_module, inputs, forward, torch_forward, dtype, seed=0):
    """Forward both on copies of ``inputs`` (NumPy arrays; float ones get gradients),
    backward a random weighting of all outputs, and return for each side
    (outputs, input gradients, parameter gradients by name) as NumPy arrays."""
    import torch

    copy_weights_to_torch(module, torch_module)
    ours = [tinylm.Tensor(a.copy(), requires_grad=a.dtype.kind == "f") for a in inputs]
    theirs = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in inputs]
    our_out = flat(forward(module, *ours))
    their_out = flat(torch_forward(torch_module, *theirs))
    assert len(our_out) == len(their_out)
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(o.shape).astype(dtype) for o in our_out]
    loss = None
    for o, w in zip(our_out, weights):
        term = (o * tinylm.Tensor(w)).sum()
        loss = term if loss is None else loss + term
    loss.backward()
    sum((o * torch.from_numpy(w)).sum() for o, w in zip(their_out, weights)).backward()

    def grads(tensors):
        return [None if t.grad is None else t.grad.numpy() for t in tensors]  # same spelling in both

    ours_result = ([o.numpy() for o in our_out], grads(ours),
                   {n: (p.grad.numpy() if p.grad is not None else None) for n, p in module.named_parameters()})
    theirs_result = ([o.detach().numpy() for o in their_out], grads(theirs),
                     {n: (p.grad.numpy() if p.grad is not None else None) for n, p in torch_module.named_parameters()})
    return ours_result, theirs_result


def assert_same(ours, theirs, dtype, **override):
    tolerance = {**TOLERANCES[dtype], **override}
    our_outputs, our_input_grads, our_param_grads = ours
    their_outputs, their_input_grads, their_param_grads = theirs
    for i, (a, b) in enumerate(zip(our_outputs, their_outputs)):
        np.testing.assert_allclose(a, b, **tolerance, err_msg=f"output {i}")
    for i, (a, b) in enumerate(zip(our_input_grads, their_input_grads)):
        if b is None:
            continue
        np.testing.assert_allclose(a, b, **tolerance, err_msg=f"gradient of input {i}")
    assert list(our_param_grads) == list(their_param_grads), "parameter names or order differ"
    for name in their_param_grads:
        np.testing.assert_allclose(our_param_grads[name], their_param_grads[name], **tolerance,
                                   err_msg=f"gradient of {name}")
