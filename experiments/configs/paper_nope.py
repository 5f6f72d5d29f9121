"""The NoPE paper's protocol (Kazemnejad et al., NeurIPS 2023), for an accelerator.

Decoder-only models trained on lengths 1..20 and tested on (20, 40], scored by exact match
under greedy decoding (the table's NoPE score), 3 seeds, with the paper's encodings: NoPE,
T5's bias, ALiBi, RoPE (rotating 25% of each head's dimensions, as the paper's RoPE does)
and the sinusoidal absolute encoding; and the tasks of the package's suite that the paper
also uses (copy, reverse, sorting, addition, parity) plus the rest of the suite.

Command (a Colab TPU, a GPU, or any accelerator; the same code as the quick preset):
  python -m experiments.length_extrapolation --config experiments/configs/paper_nope.py \
      --workdir /content/drive/MyDrive/posenc_runs/paper_nope

Differences from the paper, so that numbers are compared knowingly: the paper's models
have ~107M parameters (T5-base decoder size); this preset uses d_model 512, 6 layers, 8
heads (~19M with the embeddings) to fit a Colab TPU; the paper trains arithmetic tasks at
N = 8, this preset every task at N = 20 (one train length per study); its tasks are
written in the package's token layouts (docstrings of ``posenc_jax.data``).

Expected runtime: not measured (written on a 2-core CPU without an accelerator). A model
step here costs ~6 * 19M * 128 * 40 ≈ 0.6 TFLOP; 25 cells x 3 seeds x 20k steps is ~0.9
EFLOP, about 3 hours at 100 TFLOP/s sustained.

Published numbers to compare with (Kazemnejad et al. 2023, Figure 3 / Table 2): copy at
(20, 40]: NoPE 0.986 ± 0.005, T5 0.771, ALiBi 0.289, RoPE 0.000, absolute 0.000; mean
reciprocal rank over their 10 tasks NoPE 0.69, T5 0.55, ALiBi 0.50, RoPE 0.33, APE 0.22.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.encodings = ("nope", "t5", "alibi", "rope", "sinusoidal")
    c.encoding_kwargs = {"rope": {"rotary_fraction": 0.25}}
    c.tasks = (
        "copy",
        "reverse",
        "sort",
        "binary_addition",
        "parity",
        "duplicate_string",
        "even_pairs",
        "modular_arithmetic",
    )
    c.seeds = (0, 1, 2)
    c.train_length = 20
    c.min_train_length = 1
    c.eval_multipliers = (1, 2)
    c.eval_every_length_to = 2
    c.eval_examples = 512
    c.eval_batch_size = 128
    c.greedy_decoding = True
    c.model.d_model = 512
    c.model.num_layers = 6
    c.model.num_heads = 8
    c.model.mlp_dim = 2048
    c.batch_size = 128
    c.optimizer.total_steps = 20000
    c.optimizer.warmup_steps = 1000
    c.optimizer.learning_rate = 3e-4
    c.checkpoint_every = 2000
    return c
