"""Positions chosen for the task: addition with Abacus and position coupling against the rest.

The ``addition`` task (digits least significant first, each operand's digit count drawn
from 1..N, the loss on the answer only) trained at N = 8 and evaluated on problems whose
two operands both have every length in [8, 16] digits, with seven encodings: NoPE,
sinusoidal, RoPE, ALiBi, randomized RoPE (positions from [0, 512)), Abacus embeddings and
position coupling, the last two with NoPE attention and a learned table indexed by each
digit's place. Their training offsets cover the places of 2N-digit problems with the
papers' margin: Abacus draws k from [0, 2N] (ids up to 3N + 1; the paper's k = 100 covers
its 100-digit tests from 20), position coupling draws its start so that ids fill
[1, 3N + 3] (1.5 times the 2N + 2 a 2N-digit problem needs, as the paper's 150 for 100
digits). Model: decoder, 2 layers, d_model 64, 4 heads; 2,400 steps of batch 64 at
learning rate 3e-3, one seed (the budget at which Abacus and position coupling learn
8-digit addition here: greedy exact match at N >= 0.9 in trial runs).

Command:
  python -m experiments.length_extrapolation --config experiments/configs/arithmetic.py \
      --workdir runs/arithmetic

Measured once (one seed, a 2-core CPU shared with other jobs: load average 6.6 / 9.1 / 9.8
at the start, 20 min 53 s wall for the 7 cells; alone it takes a fraction of that).
Greedy-decoding exact match at N = 8 and 2N = 16 digits, per-token accuracy at 2N, and
the table's two scores:

| encoding | exact @ 8 | exact @ 16 | per-token @ 16 | NoPE score (9..16) | RPE score |
|---|---|---|---|---|---|
| nope | 0.00 | 0.00 | 0.13 | 0.00 | 0.16 |
| sinusoidal | 0.88 | 0.00 | 0.10 | 0.00 | 0.11 |
| rope | 0.09 | 0.00 | 0.13 | 0.00 | 0.17 |
| alibi | 0.00 | 0.00 | 0.23 | 0.00 | 0.33 |
| randomized_rope | 0.00 | 0.00 | 0.17 | 0.00 | 0.21 |
| abacus | 0.96 | 0.00 | 0.68 | 0.17 | 0.82 |
| position_coupling | 1.00 | 0.01 | 0.78 | 0.22 | 0.88 |

(position coupling at 9 / 10 / 11 digits: 0.83 / 0.55 / 0.23; Abacus 0.67 / 0.66 / 0.01.)
The RoPE and randomized RoPE rows were re-run on 2026-12-06 after RoPE's rotation became a
product with a fixed matrix (``--config.encodings="('rope','randomized_rope')"``, 1 min
58 s on the idle machine): RoPE's exact match at 8 digits moved from 0.30 to 0.09 and
randomized RoPE's per-token accuracy at 16 from 0.15 to 0.17, the rest of both rows the
same. One seed at this budget leaves RoPE's fit of 8-digit addition unsettled.
RoPE and sinusoidal stay below 0.1 at 2N, as the target says; neither Abacus nor position
coupling reaches 0.9 there: the target is not met at this scale. Only the task-position
encodings (and sinusoidal) learn 8-digit addition in this budget, and theirs degrades
gradually with length. In trial runs of position coupling (1 layer, d_model 128) the
errors at 16 digits fell on every significance, the low ones included, whose ids training
covered: a query's id meets ids up to 17 apart there but at most 9 apart in training, so
the table's logits for those pairs are untrained and the softmax spreads over twice as
many digits. The papers train far larger models far longer (position coupling: width
1024, 50k steps of batch 1000; Abacus: 16 layers of width 1024, a day of GPU time) and
report 200-digit and 100-digit addition from 30 and 20 digits.
"""

from experiments.configs import base


def get_config(arg: str | None = None):
    del arg
    c = base.get_config()
    c.train_length = 8
    n = c.train_length
    c.encodings = (
        "nope",
        "sinusoidal",
        "rope",
        "alibi",
        "randomized_rope",
        "abacus",
        "position_coupling",
    )
    c.encoding_variants = {"randomized_rope": "randomized"}
    c.encoding_kwargs = {
        "randomized_rope": {"base": "rope", "max_position": 512},
        "abacus": {"max_offset": 2 * n},
        "position_coupling": {"max_position": 3 * n + 3},
    }
    c.tasks = ("addition",)
    c.seeds = (0,)
    c.eval_multipliers = (1, 2)
    c.greedy_decoding_to = 2
    c.model.num_layers = 2
    c.batch_size = 64
    c.optimizer.total_steps = 2400
    c.optimizer.warmup_steps = 100
    c.optimizer.learning_rate = 3e-3
    c.log_every = 400
    return c
