"""Training-step speed against x-transformers (PyTorch), same model, same shapes, one run.

For each encoding family and shape, this times AdamW training steps of the same decoder
in both libraries, in this one process, and prints tokens per second of each and their
ratio (this package / x-transformers; above 1 is faster). Both steps are built and
warmed up first; then ``--repeats`` rounds each run :data:`STEPS_PER_TURN` steps of
x-transformers and as many of this package, so that a slow minute of a shared machine
slows both. The first step of each turn is not counted: the other library's worker
threads keep spinning for a while after their work (OpenMP's spin-wait in PyTorch), and
with one step per turn the round ratios of one configuration spread over 0.89-1.54;
sleeping between turns instead made both libraries' steps 10-40% slower. A round's ratio
is the ratio of the two turns' median counted steps; the ratio reported is the median
over rounds, with the lowest and highest round beside it; tokens per second are each
library's best counted step.

* this package: the study's own step (``experiments.benchmarks.train_step.measure_step``:
  the jit of the vmapped ``train_step``, one seed, the copy task's batches), float32;
* x-transformers: ``TransformerWrapper(Decoder(...))`` with the family's option, a
  cross-entropy loss over every token, ``clip_grad_norm_`` and ``torch.optim.AdamW``, in
  float32 on the CPU with every core (``torch.set_num_threads``).

Model: d_model 256, 4 layers, 8 heads, MLP 1024, 256-token vocabulary; shapes (L 256, batch
16) and (L 1024, batch 4). Families and their options in x-transformers: rotary
(``rotary_pos_emb``; here ``rope``), ALiBi (``alibi_pos_bias``; ``alibi``), T5 buckets
(``rel_pos_bias``; ``t5``), sinusoidal (``scaled_sinu_pos_emb``, a sinusoid with one
learned scale; here the fixed ``sinusoidal``) and none (no position; ``nope``). The two
models differ in small ways that cost little (x-transformers' layer norms have no bias,
its output layer no bias); both are pre-norm with a GELU MLP and attention without
projection biases.

Install the peers once (they are not dependencies of the package):
  pip install torch --index-url https://download.pytorch.org/whl/cpu
  pip install -e '.[bench]'

Command (about 10 minutes on a 2-core CPU):
  .venv/bin/python -m experiments.benchmarks.peers --out runs/benchmarks/peers.json

Flags: ``--families rope,alibi,t5,sinusoidal,nope``, ``--shapes 256x16,1024x4``,
``--repeats 5`` (rounds), ``--smoke`` (tiny model, seconds).
"""

import argparse
import os
import statistics
import sys
import time

from experiments.benchmarks.report import write_json
from experiments.benchmarks.train_step import MODEL, SHAPES, make_spec, prepared_step

#: This package's encoding name -> the x-transformers Decoder / wrapper options.
FAMILIES = {
    "rope": {"decoder": {"rotary_pos_emb": True}, "wrapper": {"use_abs_pos_emb": False}},
    "alibi": {"decoder": {"alibi_pos_bias": True}, "wrapper": {"use_abs_pos_emb": False}},
    "t5": {"decoder": {"rel_pos_bias": True}, "wrapper": {"use_abs_pos_emb": False}},
    "sinusoidal": {"decoder": {}, "wrapper": {"scaled_sinu_pos_emb": True}},
    "nope": {"decoder": {}, "wrapper": {"use_abs_pos_emb": False}},
}
INSTALL = (
    "x-transformers and PyTorch are needed for this benchmark: "
    "pip install torch --index-url https://download.pytorch.org/whl/cpu && "
    "pip install -e '.[bench]'"
)


def peer_libraries():
    """``(torch, x_transformers)``, or exits with how to install them."""
    try:
        import torch
        import x_transformers
    except ImportError as error:
        sys.exit(f"{INSTALL} ({error}).")
    return torch, x_transformers


def peer_step(family: str, length: int, batch: int, model: dict):
    """x-transformers' training step of the same decoder, warmed up: ``(step, info)``,
    ``step()`` one AdamW step and ``info`` the library's versions."""
    torch, x_transformers = peer_libraries()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    options = FAMILIES[family]
    net = x_transformers.TransformerWrapper(
        num_tokens=model["vocab_size"],
        max_seq_len=length,
        attn_layers=x_transformers.Decoder(
            dim=model["d_model"],
            depth=model["num_layers"],
            heads=model["num_heads"],
            ff_mult=model["mlp_dim"] // model["d_model"],
            **options["decoder"],
        ),
        **options["wrapper"],
    )
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=0.01)
    tokens = torch.randint(0, model["vocab_size"], (batch, length + 1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]

    def step() -> float:
        logits = net(inputs)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
        return float(loss)

    for _ in range(2):
        step()
    info = {
        "library": "x-transformers",
        "version": getattr(x_transformers, "__version__", ""),
        "torch": torch.__version__,
    }
    return step, info


#: Steps each library runs per turn; the first of a turn is not counted (see the module
#: docstring).
STEPS_PER_TURN = 3


def interleaved(steps: dict, rounds: int) -> dict[str, list[list[float]]]:
    """Seconds of the counted steps of each named step function, per round: in every round
    each runs :data:`STEPS_PER_TURN` steps in turn, the first of a turn not counted."""
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            step()
            turn = []
            for _ in range(STEPS_PER_TURN - 1):
                start = time.perf_counter()
                step()
                turn.append(time.perf_counter() - start)
            times[name].append(turn)
    return times


def compare(family: str, length: int, batch: int, model: dict, rounds: int) -> dict:
    """One family and shape: both steps, interleaved, and their ratio."""
    peer, info = peer_step(family, length, batch, model)
    ours, _, compile_s = prepared_step(make_spec(family, length, batch, model=model))
    times = interleaved({"peer": peer, "ours": ours}, rounds)
    ratios = [
        statistics.median(p) / statistics.median(o)
        for p, o in zip(times["peer"], times["ours"], strict=True)
    ]
    tokens = batch * length
    return {
        "family": family,
        "length": length,
        "batch": batch,
        "peer": {**info, "step_s": times["peer"]},
        "ours": {"step_s": times["ours"], "compile_s": compile_s},
        "peer_tokens_per_s": tokens / min(min(turn) for turn in times["peer"]),
        "ours_tokens_per_s": tokens / min(min(turn) for turn in times["ours"]),
        "ratio": statistics.median(ratios),
        "ratio_low": min(ratios),
        "ratio_high": max(ratios),
        "load_average": os.getloadavg(),
    }


def ratio_table(rows: list[dict]) -> str:
    lines = [
        "| family | L x B | x-transformers tokens/s | posenc_jax tokens/s | ratio, median "
        "(lowest - highest round) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['family']} | {r['length']} x {r['batch']} | {r['peer_tokens_per_s']:,.0f} | "
            f"{r['ours_tokens_per_s']:,.0f} | {r['ratio']:.2f} ({r['ratio_low']:.2f} - "
            f"{r['ratio_high']:.2f}) |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/benchmarks/peers.json")
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--shapes", default=",".join(f"{length}x{b}" for length, b in SHAPES))
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--smoke", action="store_true", help="tiny model and shapes")
    args = parser.parse_args(argv)
    peer_libraries()  # fail before any work when the peers are missing

    model = dict(MODEL)
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    if args.smoke:
        model.update(d_model=32, num_layers=1, num_heads=2, mlp_dim=64, vocab_size=16)
        shapes, args.repeats = [(16, 2)], 1
    families = args.families.split(",")
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        sys.exit(f"unknown families {unknown}; valid: {', '.join(FAMILIES)}.")

    rows = []
    for length, batch in shapes:
        for family in families:
            rows.append(compare(family, length, batch, model, args.repeats))
            print(ratio_table(rows[-1:]).splitlines()[-1], flush=True)
    write_json(args.out, {"model": model, "rows": rows})
    print(ratio_table(rows))


if __name__ == "__main__":
    main()
