"""The mechanism, measured: can dti-mini's first layer still tell where a token stands when its norm grows?

    python benchmarks/mini_probe.py [--runs runs/mini] [--out benchmarks/results/mini-probe-DATE.json]
                                    [--plot docs/benchmarks/mini/probe.png]

As the paper does for CLIP (METHOD.md section 6): the first layer reads LN(token + position
embedding) (pre-norm), so a token much longer than the position vectors drowns its position. A
linear probe (softmax regression, 96 -> 40 positions) is trained on LN(v + p_i) for 80% of the
vocabulary's tokens at every position i, then tested on the other 20% rescaled to 1, 2, 4, 8, 16x
the vocabulary mean norm (directions kept), and on the TI / DTI vectors ``benchmarks/mini.py run``
actually learned (read from ``<runs>/runs/<method>/<subject>/concept.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
METHODS = ("dti", "ti-unscaled", "ti")
HELD_OUT = 0.2


def features(ln: Any, vectors: Any, positions: Any) -> Any:
    """[n_vectors * n_positions, width]: LN(v + p) for every vector at every position (vector-major)."""
    return ln(vectors[:, None, :] + positions[None, :, :]).reshape(-1, vectors.shape[-1])


def train_probe(x: Any, y: Any, classes: int, iterations: int = 1500, seed: int = 0) -> Any:
    """Softmax regression by full-batch Adam: linear, so it reads only what LN's output holds linearly."""
    import torch

    torch.manual_seed(seed)
    probe = torch.nn.Linear(x.shape[-1], classes)
    opt = torch.optim.Adam(probe.parameters(), lr=0.02)
    for _ in range(iterations):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(probe(x), y) + 1e-4 * probe.weight.square().sum()
        loss.backward()
        opt.step()
    return probe


def accuracy(probe: Any, ln: Any, vectors: Any, positions: Any) -> list[float]:
    """Per vector: the fraction of positions the probe decodes correctly."""
    import torch

    with torch.no_grad():
        pred = probe(features(ln, vectors, positions)).argmax(-1).reshape(len(vectors), len(positions))
    return (pred == torch.arange(len(positions))[None, :]).float().mean(-1).tolist()


def learned_vectors(runs: Path) -> dict[str, dict[str, Any]]:
    from dti.concepts.concept import Concept

    found: dict[str, dict[str, Any]] = {}
    for method in METHODS:
        for path in sorted((runs / "runs" / method).glob("*/concept.safetensors")):
            found.setdefault(method, {})[path.parent.name] = Concept.load(path).encoders["text_encoder_2"].vectors[0]
    return found


def main(argv: list[str] | None = None) -> None:
    import torch
    from transformers import CLIPTextModelWithProjection

    from dti.core.files import write_json
    from dti.evaluation.stats import bootstrap
    from dti.mini.model import PACKAGED

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="runs/mini", help="a benchmarks/mini.py run folder (its learned vectors are probed too)")
    p.add_argument("--out", default=f"benchmarks/results/mini-probe-{time.strftime('%Y-%m-%d')}.json")
    p.add_argument("--plot", default="docs/benchmarks/mini/probe.png")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = CLIPTextModelWithProjection.from_pretrained(PACKAGED / "text_encoder_2").float().eval()
    emb = model.text_model.embeddings
    table = emb.token_embedding.weight.detach()
    positions = emb.position_embedding.weight.detach()
    ln = model.text_model.encoder.layers[0].layer_norm1
    mean = float(table.norm(dim=-1).mean())
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(table), generator=g)
    n_test = round(HELD_OUT * len(table))
    test, train = table[order[:n_test]], table[order[n_test:]]
    y = torch.arange(len(positions)).repeat(len(train))
    with torch.no_grad():
        x = features(ln, train, positions)
    probe = train_probe(x, y, len(positions))
    result: dict[str, Any] = {
        "vocab": len(table),
        "width": int(table.shape[-1]),
        "positions": len(positions),
        "vocab_mean_norm": mean,
        "position_mean_norm": float(positions.norm(dim=-1).mean()),
        "train_tokens": len(train),
        "test_tokens": len(test),
        "train_accuracy": sum(accuracy(probe, ln, train, positions)) / len(train),
        "test_as_is": bootstrap(accuracy(probe, ln, test, positions)).as_dict(),
        "rescaled": {},
        "learned": {},
    }
    directions = test / test.norm(dim=-1, keepdim=True)
    for k in MULTIPLES:
        result["rescaled"][str(k)] = bootstrap(accuracy(probe, ln, directions * (k * mean), positions)).as_dict()
    for method, vectors in learned_vectors(Path(args.runs)).items():
        stacked = torch.stack(list(vectors.values()))
        acc = accuracy(probe, ln, stacked, positions)
        norms = (stacked.norm(dim=-1) / mean).tolist()
        result["learned"][method] = {
            "accuracy": bootstrap(acc).as_dict(),
            "norm_over_mean": sum(norms) / len(norms),
            "per_subject": {s: {"accuracy": a, "norm_over_mean": n} for s, a, n in zip(vectors, acc, norms)},
        }
    write_json(args.out, result)
    plot(result, Path(args.plot))
    print(json.dumps({k: v for k, v in result.items() if k != "learned"}, indent=1))
    for method, r in result["learned"].items():
        print(f"{method:12s} norm/mean {r['norm_over_mean']:.2f} position accuracy {r['accuracy']['mean']:.3f}")


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    ks = [float(k) for k in result["rescaled"]]
    acc = list(result["rescaled"].values())
    ax.plot(ks, [a["mean"] for a in acc], "o-", color="0.3", label="held-out vocabulary tokens, rescaled")
    ax.fill_between(ks, [a["low"] for a in acc], [a["high"] for a in acc], color="0.3", alpha=0.2)
    for (method, r), colour in zip(result["learned"].items(), ("tab:blue", "tab:orange", "tab:red")):
        per = r["per_subject"].values()
        ax.scatter([v["norm_over_mean"] for v in per], [v["accuracy"] for v in per], color=colour, label=f"{method} (learned)", zorder=3)
    ax.axhline(1 / result["positions"], color="0.6", linestyle=":", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("token norm / vocabulary mean")
    ax.set_ylabel("position probe accuracy")
    ax.set_title("dti-mini: position decodable from LN(token + position)?")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
