"""Sampling speed of the default-size transformer at batch 1: a key/value cache against
rereading the whole context, in tinylm and in PyTorch.

    python benchmarks/transformer_generation.py                  # 200 tokens after a 16-token prompt
    python benchmarks/transformer_generation.py --tokens 400 --threads 2 --json out.json

The model is ``TransformerLanguageModel(512, d_model=128, n_heads=4, n_layers=2,
max_len=512)`` in eval mode, and the same weights are loaded into an equivalent PyTorch
model (LayerNorm, one packed Linear for q, k and v, ``scaled_dot_product_attention``,
GELU with the tanh approximation). Four loops write the same number of tokens, each
sampling with the same seeded generator and the same ``next_token_distribution``:

1. tinylm, cached: ``sample_tokens`` through the model's ``TransformerStepper`` (each
   step computes the new position only, over the cached keys and values);
2. tinylm, rerun: the stepper before the cache, a full forward over the context for every
   token (``RerunStepper`` below);
3. PyTorch eager, rerun: the PyTorch model's forward over the context for every token;
4. PyTorch eager, cached: the same key/value cache written the same way (each block's keys
   and values (B, nh, T, hs), grown by one position a step with ``torch.cat``).

Prints the machine (``tinylm.bench.machine.header()``), tokens/s of each and the ratios.
Both libraries run with the same thread count (--threads, 2 by default). Before timing it
checks that the PyTorch model's logits are tinylm's and that the four loops sample the same
tokens. Only this script uses torch.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

import tinylm
from tinylm.bench.machine import header, set_threads
from tinylm.generation import next_token_distribution, sample_tokens
from tinylm.models import TransformerLanguageModel

CONFIG = dict(vocab_size=512, d_model=128, n_heads=4, n_layers=2, max_len=512)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokens", type=int, default=200, help="tokens to sample after the prompt")
    p.add_argument("--prompt", type=int, default=16, help="prompt length")
    p.add_argument("--threads", type=int, default=2, help="threads for BLAS, OpenMP and PyTorch alike")
    p.add_argument("--repeats", type=int, default=3, help="runs of each loop; the fastest counts")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


class RerunStepper:
    """tinylm's transformer stepper before the key/value cache: every call reruns the model
    over the last ``max_len`` tokens of the context (its state, (B, T) ids)."""

    def __init__(self, model):
        self.model = model

    def start(self, prompt_ids, state=None):
        return self._last_logits(np.asarray(prompt_ids)[:, -self.model.max_len:])

    def step(self, ids, context):
        context = np.concatenate([context, np.asarray(ids)[:, None]], axis=1)  # (B, T + 1)
        return self._last_logits(context[:, -self.model.max_len:])

    def _last_logits(self, context):
        with tinylm.no_grad():
            logits, _ = self.model(context)  # (B, T, V)
        return logits.data[:, -1], context


class _RerunModel:
    """tinylm's model as ``sample_tokens`` sees it, with the rerun stepper in place."""

    def __init__(self, model):
        self.model, self.training = model, model.training

    def stepper(self):
        return RerunStepper(self.model)

    def eval(self):
        self.model.eval()

    def train(self, mode=True):
        self.model.train(mode)


def torch_model(model):
    """A PyTorch twin of tinylm's ``model``, its weights loaded by name (strict), in eval mode."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    d, heads = CONFIG["d_model"], CONFIG["n_heads"]
    size = d // heads  # hs

    class Attention(nn.Module):  # parameters named as in tinylm's (and torch's) MultiheadAttention
        def __init__(self):
            super().__init__()
            self.in_proj_weight = nn.Parameter(torch.empty(3 * d, d))
            self.in_proj_bias = nn.Parameter(torch.empty(3 * d))
            self.out_proj = nn.Linear(d, d)

        def qkv(self, x):  # (B, T, d) -> q, k, v each (B, nh, T, hs)
            batch, length = x.shape[:2]
            projected = F.linear(x, self.in_proj_weight, self.in_proj_bias)  # (B, T, 3d)
            return [part.view(batch, length, heads, size).transpose(1, 2) for part in projected.split(d, dim=-1)]

        def merge(self, attended):  # (B, nh, T, hs) -> out_proj of (B, T, d)
            batch, _, length, _ = attended.shape
            return self.out_proj(attended.transpose(1, 2).reshape(batch, length, d))  # (B, T, d)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = Attention()
            self.mlp_in, self.mlp_out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def mlp(self, x):
            return x + self.mlp_out(F.gelu(self.mlp_in(self.ln_2(x)), approximate="tanh"))

        def forward(self, x):  # (B, T, d), the whole context
            q, k, v = self.attn.qkv(self.ln_1(x))
            x = x + self.attn.merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))
            return self.mlp(x), k, v

        def step(self, x, keys, values):  # x (B, 1, d), keys and values (B, nh, T, hs) cached
            q, k, v = self.attn.qkv(self.ln_1(x))  # each (B, nh, 1, hs)
            keys, values = torch.cat([keys, k], dim=2), torch.cat([values, v], dim=2)  # (B, nh, T + 1, hs)
            weights = ((q @ keys.transpose(-1, -2)) / math.sqrt(size)).softmax(-1)  # (B, nh, 1, T + 1), no mask
            return self.mlp(x + self.attn.merge(weights @ values)), keys, values

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(CONFIG["vocab_size"], d)
            self.blocks = nn.ModuleList(Block() for _ in range(CONFIG["n_layers"]))
            self.ln_f = nn.LayerNorm(d)
            self.fc = nn.Linear(d, CONFIG["vocab_size"])
            self.register_buffer("table", torch.from_numpy(model.position.table).float(), persistent=False)

        def forward(self, ids):  # (B, T) -> logits (B, T, V), keys and values of every block
            x = self.embedding(ids) + self.table[: ids.shape[1]]
            keys, values = [], []
            for block in self.blocks:
                x, k, v = block(x)
                keys.append(k)
                values.append(v)
            return self.fc(self.ln_f(x)), keys, values

        def step(self, ids, keys, values):  # ids (B, 1) at position T = the cached length
            x = self.embedding(ids) + self.table[keys[0].shape[2]]
            new_keys, new_values = [], []
            for block, k, v in zip(self.blocks, keys, values):
                x, k, v = block.step(x, k, v)
                new_keys.append(k)
                new_values.append(v)
            return self.fc(self.ln_f(x)), new_keys, new_values

    twin = Transformer()
    twin.load_state_dict({name: torch.from_numpy(array) for name, array in model.state_dict().items()})
    return twin.eval()


def torch_sample(twin, prompt: list[int], tokens: int, rng, cached: bool) -> list[int]:
    """``tokens`` sampled ids, as ``sample_tokens`` samples them, with the twin's forward
    over the whole context at each token, or with its key/value cache."""
    import torch

    out = []
    with torch.no_grad():
        context = torch.tensor([prompt])
        logits, keys, values = twin(context)
        for n in range(tokens):
            if n > 0:
                if cached:
                    logits, keys, values = twin.step(context[:, -1:], keys, values)
                else:
                    logits, _, _ = twin(context[:, -CONFIG["max_len"]:])
            probabilities = next_token_distribution(logits[0, -1].numpy(), 1.0, None)
            token = int(rng.choice(len(probabilities), p=probabilities))
            out.append(token)
            context = torch.cat([context, torch.tensor([[token]])], dim=1)
    return out


def best_time(run, repeats: int) -> tuple[float, list[int]]:
    """The fastest of ``repeats`` runs of ``run()`` (seconds) and what it returned."""
    best, result = math.inf, None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    tinylm.manual_seed(0)
    model = TransformerLanguageModel(**CONFIG).eval()
    twin = torch_model(model)
    prompt = [int(i) for i in np.random.default_rng(1).integers(0, CONFIG["vocab_size"], args.prompt)]

    import torch

    with tinylm.no_grad(), torch.no_grad():  # the twin is the same model: logits agree
        ids = np.array([prompt])
        ours, theirs = model(ids)[0].numpy(), twin(torch.from_numpy(ids))[0].numpy()
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-4)

    def seeded():
        return np.random.default_rng(2)

    loops = {
        "tinylm, key/value cache": lambda: list(sample_tokens(model, prompt, args.tokens, seeded())),
        "tinylm, rerun the context": lambda: list(sample_tokens(_RerunModel(model), prompt, args.tokens, seeded())),
        "PyTorch eager, rerun the context": lambda: torch_sample(twin, prompt, args.tokens, seeded(), cached=False),
        "PyTorch eager, key/value cache": lambda: torch_sample(twin, prompt, args.tokens, seeded(), cached=True),
    }
    machine = header()
    print(json.dumps(machine, indent=1))
    print(f"backend {tinylm.get_backend()}, {args.threads} threads; {args.tokens} tokens after a {args.prompt}-token "
          f"prompt, batch 1, the fastest of {args.repeats} runs")
    results, samples = {}, {}
    for name, run in loops.items():
        seconds, samples[name] = best_time(run, args.repeats)
        results[name] = dict(seconds=seconds, tokens_per_s=args.tokens / seconds)
    same = len({tuple(s) for s in samples.values()}) == 1

    rate = {name: r["tokens_per_s"] for name, r in results.items()}
    names = list(rate)
    ratios = {
        "tinylm: cache / rerun": rate[names[0]] / rate[names[1]],
        "PyTorch: cache / rerun": rate[names[3]] / rate[names[2]],
        "cache: tinylm / PyTorch": rate[names[0]] / rate[names[3]],
        "rerun: tinylm / PyTorch": rate[names[1]] / rate[names[2]],
    }
    print("\n| loop | tokens/s | ms/token |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {1000 / r['tokens_per_s']:.2f} |")
    print("\n| ratio of tokens/s | |\n|---|---:|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} |")
    print(f"\nthe four loops sampled the same tokens: {'yes' if same else 'no'}")
    report = dict(machine=machine, backend=tinylm.get_backend(), threads=args.threads, tokens=args.tokens,
                  prompt=args.prompt, config=CONFIG, results=results, ratios=ratios, same_tokens=same)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
