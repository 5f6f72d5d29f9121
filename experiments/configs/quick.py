"""Quick study, the default of ``make study``: ten encodings x copy and reverse x 2 seeds.

The protocol of the length-generalization literature at CPU scale: every training example
draws its length uniformly from 1..N (N = 8), evaluation at every length in [8, 16] and at
32 and 64, with the two summary scores of the references (RPE: mean per-token accuracy
over lengths > N; NoPE: greedy exact match over (N, 2N]). The encodings cover every hook:
none (NoPE), embed (sinusoidal, learned, and the naive normalized and integer baselines),
rotate (RoPE), bias (ALiBi, T5, FIRE) and randomized positions (randomized RoPE, positions
sampled from [0, 512)). Model: decoder, d_model 64, 3 layers, 4 heads; 1,200 steps of
batch 32 at learning rate 3e-3.

Command (``make study``; set GLIBC_TUNABLES=glibc.malloc.hugetlb=1 when running it
directly, as the Makefile does):
  python -m experiments.length_extrapolation --config experiments/configs/quick.py \
      --workdir runs/quick

Expected result (measured on a 2-core CPU with nothing else running, 10 min 19 s from an
empty compilation cache, 6 min 16 s of it training steps; mean of the two seeds; the
README's study section has the full table):

  encoding         copy: EM at N  tok at 2N  RPE   NoPE | reverse: EM at N  tok at 2N  RPE   NoPE
  nope                   0.73       0.67     0.70  0.16 |          0.78       0.62     0.67  0.16
  sinusoidal             1.00       0.18     0.25  0.00 |          1.00       0.21     0.18  0.00
  learned                0.99       0.34     0.26  0.00 |          1.00       0.22     0.22  0.00
  normalized             0.99       0.78     0.79  0.00 |          0.99       0.79     0.80  0.00
  integer                0.99       0.29     0.53  0.21 |          0.88       0.23     0.40  0.11
  rope                   1.00       0.10     0.21  0.00 |          1.00       0.39     0.50  0.02
  alibi                  0.89       0.80     0.80  0.34 |          0.90       0.63     0.70  0.24
  t5                     0.84       0.43     0.45  0.00 |          0.89       0.66     0.67  0.11
  fire                   0.90       0.80     0.80  0.32 |          0.88       0.69     0.74  0.25
  randomized_rope        0.78       0.71     0.74  0.22 |          0.38       0.58     0.63  0.06

(EM: exact match, teacher-forced; tok: per-token accuracy; RPE and NoPE: the summary
scores.) The budget was chosen by measurement (copy, 2 seeds, exact match at N): 2 layers
x 1,500 steps left NoPE at 0.23, ALiBi 0.82, T5 0.77, FIRE 0.70, randomized RoPE 0.57;
3 layers x 1,500 steps reached NoPE 0.81, ALiBi 0.93, T5 0.95, FIRE 0.95, randomized RoPE
0.86; 20 cells of it took about 17 minutes while the machine was shared and would take
about 12 on an idle one (estimated from this run's step rate). At either budget NoPE,
ALiBi and randomized RoPE stay below 0.95 exact match at N on copy (and at this one T5
and FIRE too); the absolute encodings and RoPE reach it.
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
        "randomized_rope",
    )
    c.encoding_variants = {"randomized_rope": "randomized"}
    c.encoding_kwargs = {"randomized_rope": {"base": "rope", "max_position": 512}}
    c.tasks = ("copy", "reverse")
    c.model.num_layers = 3
    c.optimizer.total_steps = 1200
    c.optimizer.warmup_steps = 100
    c.optimizer.learning_rate = 3e-3
    c.greedy_decoding_to = 2
    c.log_every = 200
    return c
