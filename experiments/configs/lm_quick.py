"""Language-model extrapolation on a CPU: train at N = 64 characters, bits per character on
held-out text at N .. 16N (Press et al. 2022, Figure 1, at CPU scale).

A character-level decoder (d_model 64, 3 layers, 4 heads; 600 steps of 32 windows of 64
characters, learning rate 3e-3) per encoding and seed, trained at N only, as in the ALiBi
paper; then the held-out text is cut into non-overlapping windows of N, 2N, 4N, 8N and
16N characters, every character scored once, and the table gives bits per character
(mean ± sample std over two seeds) per length and by position in the window at 16N. The
16N windows (1,024) run through the chunked attention path (the router's choice beyond
512 x 512 logits). Sliding windows: ``--config.lm.sliding_stride=32``. The same windows of
the first 8,192 held-out characters decoded token by token with StreamingLLM's cache of 4
sinks and 60 recent characters: ``--config.lm.streaming_recent=60``; measured for RoPE
alone, seed 0 (2 min 23 s in all on the shared 2-core CPU, 81 s of training), it gave
2.46, 2.44, 2.43, 2.42 and 2.42 bits per character at N .. 16N, where the plain windows of
the whole held-out text gave 2.20, 2.30, 3.29, 4.21 and 4.87 (at N the cache evicts
nothing: 2.46 is the plain pass over those first 8,192 characters, a harder stretch of text).

Corpus: ``python_docs``, offline (``posenc_jax.data.corpus.python_docs_text``): the
documentation topics every CPython ships (``pydoc_data.topics``, the text of ``help()``),
each paragraph once, the last 10% of the characters held out. On Python 3.11.7 that is
335,963 training and 37,329 held-out characters (103 distinct ones); no paragraph
of the held-out text is in the training text, nor any string of 100 characters. 600 steps
read about 1.2M characters, 3.7 passes over the training text. Any other corpus:
``--config.lm.corpus=PATH`` (a UTF-8 file) or a TFDS name where the machine can download.

Command:
  python -m experiments.length_extrapolation --config experiments/configs/lm_quick.py \
      --workdir runs/lm_quick

Measured (this preset, Python 3.11.7, a fresh clone on a 2-core CPU shared with other
jobs: load average 4.6 to 7.7 during the run): 13 min 29 s wall clock, corpus preparation
and every compilation included (512 s of CPU time); each cell trained in 103 to 144 s.
RoPE's row re-run on 2026-12-06 (``--config.encodings="('rope',)"``), after RoPE's
rotation became a product with a fixed matrix and evaluation at 2N .. 8N moved to the
prefix attention backend: the same numbers to the digits shown.

| encoding | N (64) | 2N | 4N | 8N | 16N (1,024) |
| --- | --- | --- | --- | --- | --- |
| sinusoidal | 2.46 ± 0.01 | 3.87 ± 0.22 | 4.75 ± 0.38 | 5.74 ± 0.06 | 5.92 ± 0.07 |
| RoPE | 2.21 ± 0.01 | 2.31 ± 0.00 | 3.36 ± 0.10 | 4.30 ± 0.14 | 4.94 ± 0.09 |
| T5 | 2.48 ± 0.02 | 2.65 ± 0.01 | 3.00 ± 0.03 | 3.36 ± 0.10 | 3.62 ± 0.14 |
| NoPE | 2.99 ± 0.01 | 3.10 ± 0.01 | 3.22 ± 0.00 | 3.31 ± 0.00 | 3.38 ± 0.01 |
| ALiBi | 2.40 ± 0.00 | 2.38 ± 0.01 | 2.38 ± 0.01 | 2.38 ± 0.01 | 2.38 ± 0.01 |

At N, RoPE fits best and NoPE worst. Past N, ALiBi stays flat; at 16N the order is ALiBi
< NoPE < T5 < RoPE < sinusoidal (at 8N NoPE and T5 are within a standard deviation),
which for the four encodings of the ALiBi paper's Figure 1 is its order (WikiText-103,
perplexity at 8x: sinusoidal 284.9, rotary 64.9, T5 25.8, ALiBi 18.0). By position in
the 16N windows, the loss of sinusoidal, RoPE and T5 rises once the position passes N
(sinusoidal 3.90 bits in positions 0-127, 6.87 in 384-511); NoPE's rises slowly (3.05 to
3.54) and ALiBi's not at all (2.35 to 2.51).
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
