"""Run a few training steps of tinylm's Trainer in float64, alone or as one rank of
``mpiexec -n N``, and save the parameters after every step (rank 0) as .npz.

    python trainer_steps.py OUT.npz TASK DATA [--shard-optimizer]

TASK is "lstm" (a language model on the text file DATA, with dropout) or "translate" (a
seq2seq-lstm on the TSV file DATA: ranks hold different numbers of target tokens). Each
rank also checks, after every step, that its parameters equal rank 0's bit for bit.
"""

import sys

import numpy as np

import tinylm
from tinylm import distributed, train
from tinylm.distributed.batch import BatchShare
from tinylm.runs import build_model
from tinylm.tasks import make_task

STEPS = 5


def main(out, task_kind, data, *flags):
    if distributed.launched_by_mpi():
        distributed.init_process_group()
    world, rank = distributed.get_world_size(), distributed.get_rank()
    common = ["--data", data, "--batch-size", "6", "--lr", "0.01", "--warmup-steps", "2", "--steps", "20",
              "--dropout", "0.2", "--clip", "0.5", "--seed", "3", "--backend", "numpy"]
    if task_kind == "lstm":
        argv = [*common, "--seq-len", "8", "--embedding-dim", "8", "--hidden-dim", "12", "--n-layers", "2"]
    else:
        argv = [*common, "--task", "translate", "--target-tokenizer", "char", "--embedding-dim", "8",
                "--hidden-dim", "12"]
    args = train.parse_args(argv)
    tinylm.set_backend(args.backend)
    config = train.make_config(args)
    task = make_task(config)
    tinylm.manual_seed(config["training"]["seed"])
    model = build_model(config["model"], dict(**task.model_vocabulary(), **config["model_config"])).double()
    trainer = train.Trainer(config, None, task, model, BatchShare(config["training"]["batch_size"], world, rank),
                            shard_optimizer="--shard-optimizer" in flags)
    history, losses = [], []
    for _ in range(STEPS):
        losses.append(trainer.train_step())
        flat = np.concatenate([p.numpy().ravel() for p in model.parameters()])
        if world > 1:  # every rank holds rank 0's parameters, bit for bit
            theirs = flat.copy()
            distributed.broadcast(theirs, src=0)
            if not np.array_equal(theirs, flat):
                sys.exit(f"rank {rank}: parameters differ from rank 0's after step {trainer.step}")  # ends every rank
        history.append(flat)
    if rank == 0:
        np.savez(out, params=np.stack(history), losses=np.array(losses))


if __name__ == "__main__":
    main(*sys.argv[1:])
