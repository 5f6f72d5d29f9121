"""Quick study, the default of ``make study``: about 6 minutes on an idle 2-core CPU.

Eleven encodings covering every hook (none, embed, rotate, bias, contextual, and randomized
positions), with the two naive absolute baselines (normalized and integer positions) next
to sinusoidal and learned, x two tasks (copy, reverse) x two seeds, trained at N = 8 for
500 steps and evaluated at N, 2N, 4N, 8N.

Command:
  python -m experiments.length_extrapolation --config experiments/configs/quick.py \
      --workdir runs/quick

Expected result: at N most encodings reach exact match near 1.0 on copy (NoPE and FIRE
lag at this budget); at 2N and beyond exact match falls to ~0 for every encoding, while
per-token accuracy degrades more slowly for the relative and randomized ones. Small
models trained on a single length do not extrapolate on these tasks: the quick preset
shows the method, the full preset (varied lengths, longer training) the comparison.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.encodings = (
        "nope",
        "sinusoidal",
        "learned",
        "normalized",
        "integer",
        "rope",
        "alibi",
        "t5",
        "fire",
        "cope",
        "randomized_rope",
    )
    c.encoding_variants = {"randomized_rope": "randomized"}
    c.encoding_kwargs = {"randomized_rope": {"base": "rope", "max_position": 512}}
    c.tasks = ("copy", "reverse")
    c.optimizer.total_steps = 500
    return c
