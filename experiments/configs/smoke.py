"""Smoke study: seconds, used by the tests to exercise every part of the study CLI.

Command:
  python -m experiments.length_extrapolation --config experiments/configs/smoke.py \
      --workdir /tmp/smoke

Expected result: a table with a row per encoding and columns N, 2N, 4N, 8N; the numbers
mean nothing (a few training steps of a tiny model).
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.encodings = ("nope", "sinusoidal")
    c.seeds = (0,)
    c.train_length = 3
    c.eval_examples = 8
    c.eval_batch_size = 8
    c.model.d_model = 16
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.mlp_dim = 32
    c.batch_size = 4
    c.optimizer.total_steps = 4
    c.optimizer.warmup_steps = 1
    c.log_every = 2
    c.lm.num_buckets = 3  # at most N buckets of window position (char_lm cells)
    return c
