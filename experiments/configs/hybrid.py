"""A hybrid layer schedule in the study: RoPE on three layers of four, NoPE on the fourth.

The SmolLM3 / Llama 4 pattern (``posenc_jax.models.schedules.smollm3``: NoPE on each layer
i with ``(i + 1) % 4 == 0``) next to all-RoPE and all-NoPE models of the same size, on
copy, trained on lengths 1..N as the quick preset.

Command (CPU, 2 min 18 s on an idle 2-core machine):
  python -m experiments.length_extrapolation --config experiments/configs/hybrid.py \
      --workdir runs/hybrid

Any schedule can be named the same way from the command line, e.g.
``--config.encoding_schedules='{"irope": {"schedule": "llama4_irope", "chunk_size": 8}}'``
with ``--config.encodings="('rope','irope')"``.

Expected result (measured on a 2-core CPU, two seeds, re-run on 2026-12-06 after RoPE's
rotation became a product with a fixed matrix; EM: exact match, tok: per-token accuracy,
teacher-forced):

  encoding           EM at N   tok at 2N   RPE score   NoPE score
  rope                 1.00       0.10        0.21        0.00
  nope                 0.85       0.71        0.73        0.21
  rope_nope_hybrid     1.00       0.11        0.18        0.00

At this scale one NoPE layer in four does not carry NoPE's extrapolation into the model:
the hybrid fits N like RoPE and falls like it past N (0.11 and 0.11 per-token at 2N for
the two seeds, RoPE 0.08 and 0.12). Before the RoPE change the RoPE rows read 0.09 / 0.20
and 0.19 (the NoPE row is the same).
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
