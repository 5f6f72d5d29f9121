"""Language-model extrapolation on a CPU: train at N = 64 characters, bits per character to 16N.

PLACEHOLDER
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.encodings = ("sinusoidal", "rope", "t5", "nope", "alibi")
    c.tasks = ("char_lm",)
    c.lm.corpus = "python_docs"
    c.seeds = (0, 1)
    c.train_length = 64
    c.min_train_length = 64
    c.eval_multipliers = (1, 2, 4, 8, 16)
    c.eval_every_length_to = 0
    c.eval_pad_to = 0
    c.eval_batch_size = 32
    c.greedy_decoding = False
    c.model.d_model = 64
    c.model.num_layers = 3
    c.model.num_heads = 4
    c.model.mlp_dim = 256
    c.batch_size = 32
    c.optimizer.total_steps = 600
    c.optimizer.warmup_steps = 100
    c.optimizer.learning_rate = 3e-3
    c.log_every = 100
    return c
