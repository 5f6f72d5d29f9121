"""Candidate quick preset: parameterized by env vars for measurement."""

import os

from experiments.configs import quick


def get_config(arg=None):
    c = quick.get_config()
    c.encodings = tuple(os.environ.get("ENCODINGS", ",".join(c.encodings)).split(","))
    c.tasks = tuple(os.environ.get("TASKS", "copy").split(","))
    c.optimizer.total_steps = int(os.environ.get("STEPS", "3000"))
    c.model.num_layers = int(os.environ.get("LAYERS", "3"))
    c.batch_size = int(os.environ.get("BATCH", "32"))
    c.optimizer.learning_rate = float(os.environ.get("LR", "1e-3"))
    c.optimizer.warmup_steps = int(os.environ.get("WARMUP", "100"))
    c.greedy_decoding = os.environ.get("GREEDY", "1") == "1"
    c.seeds = tuple(int(s) for s in os.environ.get("SEEDS", "0,1").split(","))
    c.min_train_length = int(os.environ.get("MINLEN", "1"))
    c.eval_multipliers = tuple(int(m) for m in os.environ.get("MULT", "1,2,4,8").split(","))
    c.eval_every_length_to = int(os.environ.get("EVERY", "2"))
    return c
