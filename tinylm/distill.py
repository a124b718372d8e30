"""Knowledge distillation: a new run (the student) learns from a trained run's (the teacher's) predictions.

``python -m tinylm.train --teacher RUN`` trains the student on

    (1 - α) · cross-entropy(student, targets) + α · T² · KL(p_T ‖ q_T)

where p_T = softmax(teacher logits / T) and q_T = softmax(student logits / T) at every
target position (Hinton, Vinyals and Dean, "Distilling the knowledge in a neural network",
2015). The softened teacher says which wrong answers are nearly right, which the one-hot
target cannot; the T² keeps the soft term's gradient, (q_T - p_T) / T per logit and about
1/T smaller again through the flatter softmaxes, on the scale of the hard term's whatever T.

The teacher is any run of the same task: loaded with ``tinylm.runs.load_run``, kept in
eval mode (no dropout) and run under ``no_grad`` on the student's batch, so it draws no
random numbers and α = 0 trains exactly as a run without a teacher. The student reads its
text with the teacher's tokenizer(s): the two models' logits must index one vocabulary.

A run records its teacher in config.json (``Teacher.record``): the folder, α, T, the
teacher's step and the SHA-256 of its model.safetensors. ``--resume`` loads the teacher
from there and refuses one whose weights changed, which would make the resumed run a
different computation from the one it continues.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

import tinylm
from tinylm.checkpoint import CheckpointError, checkpoint_dir
from tinylm.ops.distill_kl import distill_kl
from tinylm.runs import load_run
from tinylm.tasks import task_of

# The tokenizer settings a student takes from its teacher, per task: (config key, flag).
TOKENIZER_SETTINGS = {
    "language-model": (("tokenizer", "--tokenizer"), ("vocab_size", "--vocab-size")),
    "translate": (("source_tokenizer", "--source-tokenizer"), ("source_vocab_size", "--source-vocab-size"),
                  ("target_tokenizer", "--target-tokenizer"), ("target_vocab_size", "--target-vocab-size")),
}


def model_digest(run_dir) -> str:
    """The SHA-256 (hex) of the model.safetensors in ``run_dir``'s newest checkpoint."""
    path = checkpoint_dir(run_dir) / "model.safetensors"
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise CheckpointError(f"{path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


class Teacher:
    """A trained run's model in eval mode, its tokenizer(s), its config and where it came from."""

    def __init__(self, folder: Path, config: dict, tokenizers, model, step: int, digest: str):
        self.folder, self.config, self.tokenizers, self.model = folder, config, tokenizers, model
        self.step, self.digest = step, digest
        self.task = task_of(config)
        model.eval()  # no dropout: the teacher's predictions, and no draws from the student's generator

    @classmethod
    def load(cls, run_dir, flag: str = "--teacher", expected_digest: str | None = None) -> "Teacher":
        """The teacher in ``run_dir`` (any run ``load_run`` reads), or a CheckpointError; with
        ``expected_digest``, refused unless its model.safetensors still has that SHA-256."""
        folder = Path(run_dir).resolve()
        if not folder.is_dir():
            raise CheckpointError(f"{flag} {run_dir}: no such run folder")
        digest = model_digest(folder)
        if expected_digest is not None and digest != expected_digest:
            raise CheckpointError(f"{flag} {folder}: the teacher's model.safetensors has changed since this run "
                                  f"started (SHA-256 {digest[:12]}..., recorded {expected_digest[:12]}...); "
                                  "resuming with other teacher weights would not continue the same run")
        config, tokenizers, model, _, trainer_state = load_run(folder)
        if model_digest(folder) != digest:
            raise CheckpointError(f"{flag} {folder}: its checkpoint changed while it was read; is that run still "
                                  "training? Wait for it to finish")
        return cls(folder, config, tokenizers, model, trainer_state["step"], digest)

    def record(self, alpha: float, temperature: float) -> dict:
        """config.json's "distillation" block."""
        return {"teacher": str(self.folder), "alpha": alpha, "temperature": temperature, "teacher_step": self.step,
                "teacher_sha256": self.digest}

    def check_student(self, task: str, training: dict) -> None:
        """A ValueError if the student's run cannot use this teacher: another task, or (a
        transformer teacher) windows longer than its positions."""
        if task != self.task:
            raise ValueError(f"--teacher {self.folder}: a {self.task} run cannot teach a {task} run")
        max_len = self.config["model_config"].get("max_len")
        if self.config["model"] == "transformer" and training.get("seq_len", 0) > max_len:
            raise ValueError(f"--teacher {self.folder}: the teacher transformer reads at most {max_len} positions, "
                             f"fewer than --seq-len {training['seq_len']}")

    def take_tokenizer_settings(self, args) -> None:
        """Set the student's tokenizer flags in ``args`` to the teacher's; one given with another
        value is a ValueError (the student reads with the teacher's tokenizers, whatever it is)."""
        for key, flag in TOKENIZER_SETTINGS[self.task]:
            given, teachers = getattr(args, key), self.config[key]
            if given is not None and given != teachers:
                raise ValueError(f"{flag} {given}: the student uses its teacher's tokenizer, and the teacher "
                                 f"{self.folder} has {key} {teachers!r}; leave {flag} out")
            setattr(args, key, teachers)

    def forward(self, inputs, state):
        """(teacher logits (B, T, V) as an array, the teacher's state detached) for a batch."""
        with tinylm.no_grad():
            logits, state = self.model(inputs, state)
        if isinstance(state, tuple):
            state = tuple(s.detach() for s in state)
        return logits.data, state

    def state_shape(self, batch_size: int):
        """The shape of each part of the state the teacher carries across batches (an LSTM's
        (L, B, H)), or None for a model that carries none."""
        if not getattr(self.model, "carries_state", False):
            return None
        m = self.config["model_config"]
        return (m["n_layers"], batch_size, m["hidden_dim"])


def distillation_loss(share, logits, teacher_logits, targets, all_targets, alpha: float, temperature: float):
    """(the objective to call backward on, its value over the whole batch as a float):
    (1 - α) · cross-entropy + α · T² · KL(p_T ‖ q_T), both means over the batch's target
    positions (those whose target is not IGNORE, -100). ``share`` is the trainer's
    ``BatchShare``: in a data-parallel run each rank's KL is its rows' sum, scaled like
    the cross-entropy by N / (the whole batch's target positions), so the ranks' averaged
    gradients are the whole batch's."""
    cross_entropy, cross_entropy_value = share.loss(logits, targets, all_targets)
    counted = np.asarray(targets) >= 0  # (b, T) this rank's target positions
    if share.world == 1:
        kl = distill_kl(logits, teacher_logits, temperature, mask=counted)  # the mean over counted positions
        kl_value = kl.item()
    else:
        import tinylm.distributed as dist

        total = distill_kl(logits, teacher_logits, temperature, mask=counted, reduction="sum")
        summed = np.array([total.item()])
        dist.all_reduce(summed)
        positions = max(int((np.asarray(all_targets) >= 0).sum()), 1)  # none: the cross-entropy is NaN already
        kl, kl_value = total * (share.world / positions), float(summed[0]) / positions
    weight = alpha * temperature * temperature
    objective = cross_entropy * (1.0 - alpha) + kl * weight
    return objective, (1.0 - alpha) * cross_entropy_value + weight * kl_value
