"""The randomized-positional-encodings protocol (Ruoss et al., ACL 2023), for an accelerator.

Every training example draws its length uniformly from 1..40; evaluation runs at every
length in [40, 80] and at 160 and 320 (the paper tests every length 41..500; long
sequences go through the chunked attention path, except Transformer-XL's contextual term,
which needs the dense [B, H, L, S] map: add 12 to eval_multipliers on an accelerator with
room for it at eval_batch_size 32), scored by per-token accuracy
averaged over the lengths > N (the table's RPE score). Each encoding runs plain and with
randomized positions sampled from [0, 2048) at training and test time, as in the paper,
on the tasks of Delétang et al.'s suite that the package has (regular: parity, even
pairs, modular arithmetic; context-free: reverse, stack manipulation, modular arithmetic
with brackets; context-sensitive: duplicate string, binary addition, binary
multiplication, bucket sort).

Command (a Colab TPU, a GPU, or any accelerator):
  python -m experiments.length_extrapolation --config experiments/configs/paper_rpe.py \
      --workdir /content/drive/MyDrive/posenc_runs/paper_rpe

Differences from the paper: its models are encoder-only (5 layers, width 64, 8 heads) and
read the answer from placeholder tokens; here the same width and depth are a decoder that
writes the answer after the prompt (the package's layouts). The paper draws one length per
batch, here one per example. Step count and learning rate are this preset's choices.

Expected runtime: not measured (written on a 2-core CPU). The model is tiny (~0.3M
parameters); the cost is 110 cells x 3 seeds x 50k steps at sequence lengths up to 80 for
training and 1,281 for evaluation: a few hours on one accelerator.

Published numbers to compare with: Ruoss et al. 2023, Table 1 (mean per-token accuracy
over lengths 41..500 per task and encoding, plain and randomized). They are not copied
here because they were not checked against the paper.
"""

from experiments.configs import base

# Randomized NoPE would be NoPE: there is no position to randomize.
_BASES = ("sinusoidal", "learned", "rope", "alibi", "transformer_xl")


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.encodings = ("nope",) + _BASES + tuple(f"randomized_{name}" for name in _BASES)
    c.encoding_variants = {f"randomized_{name}": "randomized" for name in _BASES}
    c.encoding_kwargs = {
        f"randomized_{name}": {"base": name, "max_position": 2048} for name in _BASES
    }
    # A randomized learned table needs a row for every position it may sample.
    c.encoding_kwargs["randomized_learned"]["base_kwargs"] = {"max_length": 2048}
    c.tasks = (
        "parity",
        "even_pairs",
        "modular_arithmetic",
        "reverse",
        "stack_manipulation",
        "modular_arithmetic_brackets",
        "duplicate_string",
        "binary_addition",
        "binary_multiplication",
        "bucket_sort",
    )
    c.seeds = (0, 1, 2)
    c.train_length = 40
    c.min_train_length = 1
    c.eval_multipliers = (1, 2, 4, 8)
    c.eval_every_length_to = 2
    c.eval_examples = 512
    c.eval_batch_size = 32
    c.greedy_decoding = False
    c.model.d_model = 64
    c.model.num_layers = 5
    c.model.num_heads = 8
    c.model.mlp_dim = 256
    c.batch_size = 128
    c.optimizer.total_steps = 50000
    c.optimizer.warmup_steps = 1000
    c.optimizer.learning_rate = 1e-3
    c.checkpoint_every = 5000
    return c
