"""A hybrid layer schedule in the study: RoPE on three layers of four, NoPE on the fourth.

The SmolLM3 / Llama 4 pattern (``posenc_jax.models.schedules.smollm3``: NoPE on each layer
i with ``(i + 1) % 4 == 0``) next to all-RoPE and all-NoPE models of the same size, on
copy, trained on lengths 1..N as the quick preset.

Command (CPU, a few minutes):
  python -m experiments.length_extrapolation --config experiments/configs/hybrid.py \
      --workdir runs/hybrid

Any schedule can be named the same way from the command line, e.g.
``--config.encoding_schedules='{"irope": {"schedule": "llama4_irope", "chunk_size": 8}}'``
with ``--config.encodings="('rope','irope')"``.

Expected result: see README.md ("The study"), measured with this preset.
"""

from experiments.configs import quick


def get_config(arg: str | None = None):
    del arg
    c = quick.get_config()
    c.encodings = ("rope", "nope", "rope_nope_hybrid")
    # RoPE base 10,000 (SmolLM3's is 2e6) so that the RoPE layers match the all-RoPE row.
    c.encoding_schedules = {"rope_nope_hybrid": {"schedule": "smollm3", "base": 10000.0}}
    c.tasks = ("copy",)
    c.model.num_layers = 4
    return c
