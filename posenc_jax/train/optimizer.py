"""The optimizer of every training run: AdamW, warmup then cosine decay, gradient clipping."""

import dataclasses

import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Hyperparameters of :func:`make_optimizer`.

    Attributes:
      learning_rate: peak learning rate, reached after ``warmup_steps``.
      total_steps: length of the schedule; the cosine decays to ``end_fraction`` of the peak.
      warmup_steps: linear warmup from 0.
      weight_decay: decoupled weight decay (AdamW).
      clip_norm: global gradient-norm clip.
      b1, b2: Adam moment decays.
      end_fraction: final learning rate as a fraction of the peak.
    """

    learning_rate: float = 1e-3
    total_steps: int = 1000
    warmup_steps: int = 100
    weight_decay: float = 0.01
    clip_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.98
    end_fraction: float = 0.1

    def __post_init__(self):
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate}.")
        if self.total_steps <= 0:
            raise ValueError(f"total_steps must be positive, got {self.total_steps}.")
        if not 0 <= self.warmup_steps < self.total_steps:
            raise ValueError(
                f"warmup_steps={self.warmup_steps} must be in [0, total_steps={self.total_steps})."
            )
        if self.clip_norm <= 0:
            raise ValueError(f"clip_norm must be positive, got {self.clip_norm}.")
        # A negative end fraction turns the late schedule into gradient ascent; b = 1 stops
        # Adam's moment from moving and divides by zero in its bias correction.
        if not 0 <= self.end_fraction <= 1:
            raise ValueError(f"end_fraction must be in [0, 1], got {self.end_fraction}.")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}.")
        for name in ("b1", "b2"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}.")


def make_optimizer(config: OptimizerConfig) -> optax.GradientTransformation:
    """AdamW with linear warmup and cosine decay, after global-norm clipping.

    References:
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization" (AdamW), ICLR 2019;
      Loshchilov & Hutter, "SGDR" (cosine schedule), ICLR 2017.
    """
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=config.total_steps,
        end_value=config.learning_rate * config.end_fraction,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, b1=config.b1, b2=config.b2, weight_decay=config.weight_decay),
    )
