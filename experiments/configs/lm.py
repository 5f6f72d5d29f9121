"""Language-model extrapolation for an accelerator: train at N = 128 characters, bits per
character on held-out text at N .. 16N.

The protocol of ``lm_quick`` (see its docstring; after Press et al. 2022, Figure 1) at a
larger N, with three seeds, two more relative biases (KERPLE-log, FIRE) and, besides the
non-overlapping windows, sliding windows with stride N/2 = 64 (every scored character
after the first window then has at least L - 64 characters of context; Press et al.,
Appendix B). Windows of 8N and 16N (1,024 and 2,048) run through the chunked attention
path, in O(L) memory: the router's "auto" choice beyond 512 x 512 logits
(``posenc_jax.attention.router``; float32 rules out cuDNN's kernel).

Command (a Colab GPU or TPU, or any accelerator):
  python -m experiments.length_extrapolation --config experiments/configs/lm.py \
      --workdir /content/drive/MyDrive/posenc_runs/lm

Corpus: ``python_docs`` (offline; 335,963 training and 37,329 held-out characters on
Python 3.11.7), which 1,500 steps of 32 windows of 128 characters read about 18 times
over. A larger text suits a model of this size better: ``--config.lm.corpus=
tiny_shakespeare`` (TFDS; downloads, and needs TensorFlow, as on Colab), ``lm1b`` with
``--config.lm.validation_split=test`` (sentences in random order: no context past a
sentence helps), or any local UTF-8 file; give more ``--config.optimizer.total_steps``
with it.

Expected runtime: not measured (written on a 2-core CPU without an accelerator). The
model has about 0.8M parameters; a step is ~6 * 0.8M * 4,096 ≈ 20 GFLOP, and 7 cells x 3
seeds x 1,500 steps ≈ 0.6 PFLOP: minutes on one GPU, plus the sliding-window evaluation
(32x the non-overlapping cost at 16N).

Expected result: not measured here; see ``lm_quick`` for the CPU table.
"""

from experiments.configs import lm_quick


def get_config(arg: str | None = None):
    del arg
    c = lm_quick.get_config()
    c.encodings = ("sinusoidal", "rope", "t5", "nope", "alibi", "kerple_log", "fire")
    c.seeds = (0, 1, 2)
    c.train_length = 128
    c.min_train_length = 128
    c.lm.sliding_stride = 64
    c.eval_batch_size = 32
    c.model.d_model = 128
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.mlp_dim = 512
    c.batch_size = 32
    c.optimizer.total_steps = 1500
    c.optimizer.warmup_steps = 150
    c.optimizer.learning_rate = 1e-3
    c.checkpoint_every = 500
    c.log_every = 100
    return c
