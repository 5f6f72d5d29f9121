"""Quick study, the default of ``make study``: a few minutes on a 2-core CPU.

Command:
  python -m experiments.length_extrapolation --config experiments/configs/quick.py \
      --workdir runs/quick

Expected result: on copy trained at N = 8, every encoding but NoPE, normalized and integer
reaches ~1.0 exact-match accuracy at N; at 2N and beyond the absolute encodings fall to
~0 exact match (sinusoidal and learned do not extrapolate), which is the baseline the
relative and rotary families are measured against.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    del arg
    return base.get_config()
