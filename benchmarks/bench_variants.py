"""What each LSTM variant costs over the plain clearlstm.LSTM: inference and a training step.

Run ``python benchmarks/bench_variants.py`` (``--quick`` for fewer repeats and shapes). One
process, the same torch weights for every model (the variants' extra parameters at their
initial values), rounds interleaved (``timing.interleaved``: each round runs every model, in
shuffled order, a block of calls after a short idle, the first dropped), medians. Ratios are
``variant time / plain time`` (1.10 = 10% slower). float32, torch's thread count.

The plain LSTM runs where ``backend="auto"`` sends it: the fused kernels at (100, 8, 16, 32),
torch's own op (oneDNN) beyond ``B * H = 256`` (``nn.functional.FUSED_MAX_UNITS``), which no
variant can use; the row "plain fused" is the plain model on the fused kernels
(``backend="fused"``: the whole-sequence kernel here, on the threads the same rules give the
variants), so ``variant / plain fused`` is what the variant math itself costs. Zoneout and
dropout draw masks only in training (``model.train()``); their inference rows are evaluation
mode (zoneout: the expectation blend; dropout: off). Writes ``benchmarks/results/variants.md``
unless ``--output``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from timing import interleaved
from torch import nn

import clearlstm

SHAPES = [(100, 8, 16, 32), (200, 16, 32, 64), (100, 32, 64, 128)]  # (T, B, I, H)
VARIANTS = {
    "peephole": {"peephole": True},
    "coupled_input_forget": {"coupled_input_forget": True},
    "cell_clip": {"cell_clip": 3.0},
    "layer_norm": {"layer_norm": True},
    "zoneout 0.1/0.1": {"zoneout_h": 0.1, "zoneout_c": 0.1},
    "recurrent_dropout 0.25": {"recurrent_dropout": 0.25},
    "input_dropout 0.25": {"input_dropout": 0.25},
    "all of them": {"peephole": True, "cell_clip": 3.0, "layer_norm": True, "zoneout_h": 0.1,
                    "zoneout_c": 0.1, "recurrent_dropout": 0.25, "input_dropout": 0.25},
}  # fmt: skip
RANDOM = ("zoneout", "dropout", "all")  # names whose training draws masks


def models(shape) -> dict[str, nn.Module]:
    _, _, inputs, hidden = shape
    torch.manual_seed(0)
    ref = nn.LSTM(inputs, hidden)
    out = {"plain": clearlstm.LSTM.from_torch(ref)}
    out["plain fused"] = clearlstm.LSTM.from_torch(ref, backend="fused")
    for name, kwargs in VARIANTS.items():
        model = clearlstm.LSTM(inputs, hidden, **kwargs)
        model.load_state_dict(ref.state_dict(), strict=False)  # the variants' own: initial
        out[name] = model
    return out


def bench(shape, repeats: int) -> dict[str, dict[str, float]]:
    steps, batch, inputs, _ = shape
    x = torch.randn(steps, batch, inputs)
    contenders = models(shape)

    def infer(model):
        model.eval()

        def run():
            with torch.no_grad():
                model(x)

        return run

    def train(model):
        def step():
            model.train()
            model.zero_grad(set_to_none=True)
            model(x)[0].sum().backward()

        return step

    inference = interleaved({n: infer(m) for n, m in contenders.items()}, repeats)
    training = interleaved({n: train(m) for n, m in contenders.items()}, repeats)
    return {"inference": inference, "training": training}


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, two shapes")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/variants.md"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (5 if args.quick else 15)
    shapes = SHAPES[:2] if args.quick else SHAPES
    sections = [f"# LSTM variants against the plain LSTM ({torch.get_num_threads()} threads)\n"]
    for shape in shapes:
        r = bench(shape, repeats)
        rows = []
        for name in r["inference"]:
            masks = " (masks)" if any(k in name for k in RANDOM) else ""
            row = [name]
            for kind in ("inference", "training"):
                t, note = r[kind], masks if kind == "training" else ""
                row += [f"{t[name] * 1e3:.2f}", f"{t[name] / t['plain']:.2f}",
                        f"{t[name] / t['plain fused']:.2f}{note}"]  # fmt: skip
            rows.append(row)
        header = ["model", "inference ms", "/ plain", "/ plain fused", "training step ms",
                  "/ plain", "/ plain fused"]  # fmt: skip
        sections += [f"\n## (T, B, I, H) = {shape}\n", table(header, rows)]
        print("done", shape, flush=True)
    sections.append(
        f"\nRounds: {repeats}, interleaved, blocks of 4 calls after 30 ms idle, the first "
        "dropped; medians. '(masks)': training draws and applies zoneout/dropout masks.\n"
    )
    report = "\n".join(sections)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report + "\n")


if __name__ == "__main__":
    main()
