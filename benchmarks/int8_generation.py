"""Batch-1 sampling with int8 weights against float32: the default LSTM (and transformer).

    python benchmarks/int8_generation.py                           # random weights, default sizes
    python benchmarks/int8_generation.py --checkpoint runs/default --json out.json

The model is the default ``LSTMLanguageModel`` (embedding 128, hidden 256, 2 layers, a
100-character vocabulary unless --checkpoint gives a trained run), and the default-size
``TransformerLanguageModel`` (d_model 128, 2 layers, 4 heads). Each is sampled at batch 1
through its ``stepper()`` twice, in one process, interleaved round by round (the LSTM also
without sampling: its stepper alone on a fixed token sequence):

- float32: the model as trained (the LSTM's ``lstm_stack_step`` kernel with float32
  weights, then the output layer's product through NumPy's BLAS);
- int8: the same model after ``tinylm.quantize``'s transform (per-channel int8 weights,
  loaded as ``load_run`` loads an int8 run: ``model.int8_weights``), so the stepper reads
  int8 weights through ``lstm_stack_step``'s int8 path, the output layer included (one
  kernel call a step), and made its token table through ``int8_matmul``.

The speed of a step does not depend on the weights' values, so random weights measure
the same thing as trained ones. With PyTorch installed the LSTM is also run by
PyTorch's eager loop (``nn.LSTM`` + ``nn.Linear`` one token at a time) in float32 and
after ``torch.ao.quantization.quantize_dynamic`` (int8 weights, activations quantized per
step), for reference. Prints the machine, tokens/s and ratios; all loops of a model
sample with the same seed, and whether they sampled the same tokens is printed (int8
rounding may change a token now and then).
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
from tinylm.models import LSTMLanguageModel, TransformerLanguageModel
from tinylm.quantize import quantize_state
from tinylm.runs import dequantized_state, load_run

LSTM_CONFIG = dict(vocab_size=100, embedding_dim=128, hidden_dim=256, n_layers=2, dropout=0.1)
TRANSFORMER_CONFIG = dict(vocab_size=100, d_model=128, n_heads=4, n_layers=2, max_len=512)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, help="a trained LSTM run to sample from (default: random weights)")
    p.add_argument("--tokens", type=int, default=500, help="tokens to sample after the prompt")
    p.add_argument("--prompt", type=int, default=16, help="prompt length")
    p.add_argument("--threads", type=int, default=2, help="threads for BLAS, OpenMP and PyTorch alike")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the fastest of each loop counts")
    p.add_argument("--json", type=Path, help="also write the results here")
    return p.parse_args(argv)


def int8_twin(model, kind: str, config: dict):
    """A second model with ``model``'s weights put through ``tinylm.quantize``'s transform,
    loaded the way ``load_run`` loads an int8 run."""
    twin = (LSTMLanguageModel if kind == "lstm" else TransformerLanguageModel)(**config).eval()
    weights, int8 = dequantized_state(quantize_state(model.state_dict()))
    twin.load_state_dict(weights)
    twin.int8_weights = int8
    return twin


def torch_lstm(model, quantized: bool):
    """PyTorch's nn.LSTM + nn.Linear with the model's weights; optionally dynamic-quantized."""
    import torch

    c = model.config
    modules = torch.nn.ModuleDict(dict(
        embedding=torch.nn.Embedding(c["vocab_size"], c["embedding_dim"]),
        lstm=torch.nn.LSTM(c["embedding_dim"], c["hidden_dim"], c["n_layers"], batch_first=True),
        fc=torch.nn.Linear(c["hidden_dim"], c["vocab_size"])))
    modules.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()}, strict=True)
    modules.eval()
    if quantized:
        modules = torch.ao.quantization.quantize_dynamic(modules, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)
    return modules


def torch_sample(modules, prompt: list[int], tokens: int, rng) -> list[int]:
    """``sample_tokens``'s loop in PyTorch: the prompt in one call, then one token a step."""
    import torch

    out = []
    with torch.no_grad():
        output, state = modules["lstm"](modules["embedding"](torch.tensor([prompt])))
        logits = modules["fc"](output[:, -1])
        for n in range(tokens):
            if n > 0:
                output, state = modules["lstm"](modules["embedding"](torch.tensor([[out[-1]]])), state)
                logits = modules["fc"](output[:, -1])
            probabilities = next_token_distribution(logits[0].numpy(), 1.0, None)
            out.append(int(rng.choice(len(probabilities), p=probabilities)))
    return out


def stepper_loop(model, prompt: list[int], tokens: list[int]):
    """The stepper alone, no sampling: ``start`` on the prompt, then one ``step`` per token
    of a fixed sequence (what the float32 and int8 steppers differ in)."""
    def run():
        with tinylm.no_grad():
            stepper = model.stepper()
            logits, state = stepper.start(np.array([prompt]))
            for token in tokens:
                logits, state = stepper.step(np.array([token]), state)
        return [int(np.argmax(logits))]
    return run


def interleaved(loops: dict, rounds: int, tokens: int) -> tuple[dict, dict]:
    """Each loop once per round, in turn, after 0.3 s of quiet (a BLAS thread pool that just
    worked spins for about 0.1 s on the cores the next loop needs); the fastest run counts."""
    best, samples = {name: math.inf for name in loops}, {}
    for _ in range(rounds):
        for name, run in loops.items():
            time.sleep(0.3)
            started = time.perf_counter()
            samples[name] = run()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: dict(seconds=s, tokens_per_s=tokens / s) for name, s in best.items()}, samples


def report_table(title: str, results: dict) -> None:
    print(f"\n{title}\n\n| loop | tokens/s | µs/token |\n|---|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['tokens_per_s']:,.0f} | {1e6 / r['tokens_per_s']:.1f} |")


def main(argv=None) -> dict:
    args = parse_args(argv)
    set_threads(args.threads)
    tinylm.manual_seed(0)
    if args.checkpoint:
        _, _, lstm, _, _ = load_run(args.checkpoint)
        lstm.eval()
    else:
        lstm = LSTMLanguageModel(**LSTM_CONFIG).eval()
    transformer = TransformerLanguageModel(**TRANSFORMER_CONFIG).eval()
    vocab = lstm.config["vocab_size"]
    prompt = [int(i) for i in np.random.default_rng(1).integers(0, vocab, args.prompt)]

    def seeded():
        return np.random.default_rng(2)

    def tinylm_loop(model):
        return lambda: list(sample_tokens(model, prompt, args.tokens, seeded()))

    lstm_int8 = int8_twin(lstm, "lstm", lstm.config)
    fixed = [int(i) for i in np.random.default_rng(3).integers(0, vocab, args.tokens)]
    stepper_loops = {"tinylm float32 stepper": stepper_loop(lstm, prompt, fixed),
                     "tinylm int8 stepper": stepper_loop(lstm_int8, prompt, fixed)}
    lstm_loops = {"tinylm float32": tinylm_loop(lstm), "tinylm int8": tinylm_loop(lstm_int8)}
    try:
        import torch  # noqa: F401

        for quantized, name in ((False, "PyTorch eager float32"), (True, "PyTorch eager quantize_dynamic int8")):
            modules = torch_lstm(lstm, quantized)
            lstm_loops[name] = lambda modules=modules: torch_sample(modules, prompt, args.tokens, seeded())
    except ImportError:
        pass
    transformer_prompt = [i % TRANSFORMER_CONFIG["vocab_size"] for i in prompt]
    transformer_loops = {
        "tinylm float32": lambda: list(sample_tokens(transformer, transformer_prompt, args.tokens, seeded())),
        "tinylm int8": lambda twin=int8_twin(transformer, "transformer", TRANSFORMER_CONFIG):
            list(sample_tokens(twin, transformer_prompt, args.tokens, seeded())),
    }

    machine = header()
    print(json.dumps(machine, indent=1))
    print(f"backend {tinylm.get_backend()}, {args.threads} threads; {args.tokens} tokens after a {args.prompt}-token "
          f"prompt, batch 1, the fastest of {args.rounds} interleaved rounds")
    stepper_results, _ = interleaved(stepper_loops, args.rounds, args.tokens)
    lstm_results, lstm_samples = interleaved(lstm_loops, args.rounds, args.tokens)
    report_table(f"LSTM steppers alone, {args.tokens} steps", stepper_results)
    transformer_results, transformer_samples = interleaved(transformer_loops, args.rounds, args.tokens)
    report_table(f"LSTM {lstm.config}", lstm_results)
    report_table(f"transformer {TRANSFORMER_CONFIG}", transformer_results)

    def rate(results, name):
        return results[name]["tokens_per_s"]

    ratios = {"LSTM stepper: int8 / float32": rate(stepper_results, "tinylm int8 stepper") /
              rate(stepper_results, "tinylm float32 stepper"),
              "LSTM sampling: tinylm int8 / tinylm float32": rate(lstm_results, "tinylm int8") /
              rate(lstm_results, "tinylm float32"),
              "transformer: tinylm int8 / tinylm float32": rate(transformer_results, "tinylm int8") /
              rate(transformer_results, "tinylm float32")}
    if "PyTorch eager float32" in lstm_results:
        ratios["LSTM: tinylm int8 / PyTorch quantize_dynamic int8"] = (
            rate(lstm_results, "tinylm int8") / rate(lstm_results, "PyTorch eager quantize_dynamic int8"))
        ratios["LSTM: tinylm float32 / PyTorch float32"] = (
            rate(lstm_results, "tinylm float32") / rate(lstm_results, "PyTorch eager float32"))
    print("\n| ratio of tokens/s | |\n|---|---:|")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} |")
    same = {"lstm": len({tuple(s) for s in lstm_samples.values()}) == 1,
            "transformer": len({tuple(s) for s in transformer_samples.values()}) == 1}
    print(f"\nevery loop of a model sampled the same tokens: LSTM {'yes' if same['lstm'] else 'no'}, "
          f"transformer {'yes' if same['transformer'] else 'no'}")
    report = dict(machine=machine, backend=tinylm.get_backend(), threads=args.threads, tokens=args.tokens,
                  prompt=args.prompt, checkpoint=str(args.checkpoint) if args.checkpoint else None,
                  lstm_config=lstm.config, transformer_config=TRANSFORMER_CONFIG, lstm_steppers=stepper_results,
                  lstm=lstm_results,
                  transformer=transformer_results, ratios=ratios, same_tokens=same)
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
