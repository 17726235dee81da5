"""What is in a concept: norms against the vocabulary, angle to the initializer, neighbours.

Works on our files and foreign ones alike, so a user can see the norm inflation of a plain-TI
file they already have. Nearest tokens are listed by cosine (meaningful: semantics live in the
direction) and, for contrast, by Euclidean distance (dominated by the norm).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from dti import sphere
from dti.concept import Concept
from dti.errors import DTIError
from dti.formats import REFERENCE_MEAN_NORM, encoder_kind

#: A vector whose norm is this many times the vocabulary mean is flagged as inflated.
INFLATION_FACTOR = 2.0


def _vocab_words(tokenizer: Any, ids: list[int]) -> list[str]:
    """Readable text of each token (byte-level pieces decoded, end-of-word marks dropped)."""
    return [tokenizer.convert_tokens_to_string([tokenizer.convert_ids_to_tokens(i)]).replace("</w>", " ").strip() for i in ids]


def _topk(score: torch.Tensor, k: int) -> list[int]:
    """Indices of the ``k`` smallest scores; near-equal scores (1e-6) tie and go by id."""
    ids = torch.arange(score.numel(), dtype=torch.float64)
    key = torch.round(score.double() * 1e6) * score.numel() + ids  # exact in float64 for these ranges
    return [int(i) for i in torch.topk(-key, min(k, score.numel())).indices]


def nearest_tokens(vectors: torch.Tensor, table: torch.Tensor, tokenizer: Any, k: int) -> dict[str, list[list[dict[str, Any]]]]:
    """Top-k vocabulary rows per vector, by cosine similarity and by Euclidean distance (deterministic)."""
    table = table.detach().float()
    vectors = vectors.detach().float().to(table.device)
    cos = sphere.normalize(vectors) @ sphere.normalize(table).T
    dist = torch.cdist(vectors, table)
    out: dict[str, list[list[dict[str, Any]]]] = {"cosine": [], "euclidean": []}
    for row in range(vectors.shape[0]):
        by_cos, by_dist = _topk(-cos[row], k), _topk(dist[row], k)
        out["cosine"].append(
            [{"token": w, "id": i, "cosine": round(float(cos[row, i]), 4)} for i, w in zip(by_cos, _vocab_words(tokenizer, by_cos))]
        )
        out["euclidean"].append(
            [{"token": w, "id": i, "distance": round(float(dist[row, i]), 4)} for i, w in zip(by_dist, _vocab_words(tokenizer, by_dist))]
        )
    return out


def _slots(pipe: Any | None) -> dict[str, Any]:
    if pipe is None:
        return {}
    from dti.models import adapter_for

    return {slot.name: slot for slot in adapter_for(pipe).encoders}


def _base_table(slot: Any) -> torch.Tensor:
    from dti.tokens import vocabulary_rows

    return vocabulary_rows(slot.tokenizer, slot.text_encoder)


def vocabulary_statistics(concept: Concept, pipe: Any | None = None, need: str | None = None) -> dict[str, dict[str, Any]]:
    """Per encoder, the vocabulary's norm statistics and where they come from: the model
    (measured), the concept's metadata (measured at training), or the published reference mean.

    With ``need`` (e.g. ``"max"``), an encoder without that statistic is an error naming the fix.
    """
    from dti.tokens import vocab_stats

    slots = _slots(pipe)
    out = {}
    for name, enc in concept.encoders.items():
        if name in slots:
            stats, source = vocab_stats(_base_table(slots[name])).as_dict(), "model"
        elif name in concept.meta.get("vocab_norms", {}):
            stats, source = dict(concept.meta["vocab_norms"][name]), "concept metadata"
        elif encoder_kind(enc) in REFERENCE_MEAN_NORM:
            stats, source = (
                {"mean": REFERENCE_MEAN_NORM[encoder_kind(enc)]},
                "published reference (mean only); pass --model for min/max",
            )
        else:
            stats, source = {}, "unknown"
        if need and need not in stats:
            raise DTIError(f"the vocabulary {need} norm of {name} ({encoder_kind(enc)}) is unknown without the model; pass --model")
        out[name] = {**stats, "source": source}
    return out


def inspect_concept(concept: Concept, pipe: Any | None = None, k: int = 8) -> dict[str, Any]:
    """A machine-readable report; ``pipe`` (optional) gives measured vocabulary statistics and neighbours."""
    from dti.tokens import initializer_ids

    slots = _slots(pipe)
    vocab = vocabulary_statistics(concept, pipe)
    report: dict[str, Any] = {
        "token": concept.token,
        "n_vectors": concept.n_vectors,
        "method": concept.method,
        "meta": concept.meta,
        "encoders": {},
    }
    for name, enc in concept.encoders.items():
        entry: dict[str, Any] = {
            "kind": encoder_kind(enc),
            "width": enc.width,
            "fixed_magnitude": enc.magnitude,
            "norms": [round(float(n), 6) for n in enc.norms],
        }
        slot = slots.get(name)
        stats = {k: v for k, v in vocab[name].items() if k != "source"}
        entry["vocabulary"] = stats or None
        entry["vocabulary_source"] = vocab[name]["source"]
        if stats:
            ratios = [n / stats["mean"] for n in entry["norms"]]
            entry["norm_over_vocab_mean"] = [round(r, 3) for r in ratios]
            outside = ("max" in stats and any(n > stats["max"] * 1.0001 for n in entry["norms"])) or (
                "min" in stats and any(n < stats["min"] * 0.9999 for n in entry["norms"])
            )
            inflated = any(r > INFLATION_FACTOR for r in ratios)
            entry["out_of_distribution"] = bool(outside or inflated)
            entry["verdict"] = (
                "inflated norm: typical of plain TI; `dti rescale` repairs it"
                if inflated
                else "outside the vocabulary's norm range"
                if outside
                else "in-distribution norm"
            )
        init = enc.init
        if init is None and slot is not None and concept.meta.get("initializer"):
            try:
                ids = initializer_ids(slot.tokenizer, concept.meta["initializer"], name)
                init = slot.text_encoder.get_input_embeddings().weight[ids].detach().float().cpu()
            except Exception:
                init = None
        if init is not None and init.shape == enc.vectors.shape:
            entry["angle_to_initializer_deg"] = [round(math.degrees(float(a)), 3) for a in sphere.angle(enc.vectors, init)]
        if slot is not None:
            entry["nearest"] = nearest_tokens(enc.vectors, _base_table(slot), slot.tokenizer, k)
        report["encoders"][name] = entry
    return report


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_concept`'s report."""
    lines = [f"{report['token']}: {report['n_vectors']} vector(s), method {report['method']}"]
    init = report["meta"].get("initializer")
    if init:
        lines[0] += f", initializer '{init}'"
    for name, e in report["encoders"].items():
        kind = "" if e["kind"].startswith("width") else f"{e['kind']}, "
        lines.append(f"  {name} ({kind}width {e['width']})")
        norms = ", ".join(f"{n:.4f}" for n in e["norms"])
        fixed = f" (fixed at {e['fixed_magnitude']:.4f})" if e.get("fixed_magnitude") else ""
        lines.append(f"    norm: {norms}{fixed}")
        stats = e.get("vocabulary")
        if stats:
            parts = [f"{key} {stats[key]:.4f}" for key in ("min", "mean", "max") if key in stats]
            lines.append(f"    vocabulary norms ({e['vocabulary_source']}): {', '.join(parts)}")
            ratio = ", ".join(f"{r:.2f}x" for r in e["norm_over_vocab_mean"])
            flag = "OUT OF DISTRIBUTION" if e["out_of_distribution"] else "ok"
            lines.append(f"    norm / vocabulary mean: {ratio}  [{flag}: {e['verdict']}]")
        if "angle_to_initializer_deg" in e:
            lines.append(f"    angle to initializer: {', '.join(f'{a:.2f} deg' for a in e['angle_to_initializer_deg'])}")
        for k, row in enumerate(e.get("nearest", {}).get("cosine", [])):
            words = ", ".join(f"{n['token']} ({n['cosine']:.3f})" for n in row)
            lines.append(f"    vector {k} nearest by cosine: {words}")
        for k, row in enumerate(e.get("nearest", {}).get("euclidean", [])):
            words = ", ".join(f"{n['token']} ({n['distance']:.3f})" for n in row)
            lines.append(f"    vector {k} nearest by distance: {words}")
    return "\n".join(lines)
