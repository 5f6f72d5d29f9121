"""Full study: every registered encoding (and stick-breaking attention) x every algorithmic
task x 3 seeds, for a TPU/GPU.

Command (Colab or any accelerator; the same code as the quick preset):
  python -m experiments.length_extrapolation --config experiments/configs/full.py \
      --workdir /content/drive/MyDrive/posenc_runs/full

Expected result: relative (ALiBi, KERPLE, FIRE) and randomized encodings keep more
per-token accuracy at 2N-8N than absolute ones (sinusoidal, learned, normalized, integer),
which collapse past N. Hours on an accelerator; far too long for a CPU.
"""

import posenc_jax as pj
from experiments.configs import base
from posenc_jax.data import task_names

# Causal-only encodings run on decoder tasks only; every task here is a decoder task.
_SKIPPED_TASKS = ("char_lm",)  # a language model: the lm and lm_quick presets run it


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    # Every registered encoding (FoX and Cable among them), randomized RoPE and ALiBi, and
    # stick-breaking attention without position (an attention kind, so a layer schedule).
    c.encodings = tuple(pj.encodings.names()) + (
        "randomized_rope",
        "randomized_alibi",
        "stick_breaking",
    )
    c.encoding_variants = {"randomized_rope": "randomized", "randomized_alibi": "randomized"}
    c.encoding_schedules = {"stick_breaking": {"schedule": "stick_breaking"}}
    c.encoding_kwargs = {
        "randomized_rope": {"base": "rope", "max_position": 2048},
        "randomized_alibi": {"base": "alibi", "max_position": 2048},
        "randomized": {"base": "nope", "max_position": 2048},
    }
    c.tasks = tuple(t for t in task_names() if t not in _SKIPPED_TASKS)
    # Keys of an associative-recall example are distinct: 8N = 128 needs 128 of them.
    c.task_kwargs = {"associative_recall": {"num_keys": 128}}
    c.seeds = (0, 1, 2)
    c.train_length = 16
    c.eval_examples = 512
    c.eval_batch_size = 128
    c.model.d_model = 256
    c.model.num_layers = 4
    c.model.num_heads = 8
    c.model.mlp_dim = 1024
    c.batch_size = 128
    c.optimizer.total_steps = 10000
    c.optimizer.warmup_steps = 500
    c.optimizer.learning_rate = 5e-4
    c.checkpoint_every = 1000
    return c
