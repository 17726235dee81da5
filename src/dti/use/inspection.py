"""What is in a concept: norms against the vocabulary, angle to the initializer, neighbours.

Works on our files and foreign ones alike, so a user can see the norm inflation of a plain-TI
file they already have. Nearest tokens are listed by cosine (meaningful: semantics live in the
direction) and, for contrast, by Euclidean distance (dominated by the norm). A file every other
command refuses (NaN or all-zero rows, integer values, damaged metadata that still leaves vectors
to show) is reported with its ``problems`` listed and flagged, so the user can see what is wrong.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import torch

from dti.concepts.concept import Concept, value_problems
from dti.concepts.kinds import encoder_kind
from dti.core import sphere
from dti.core.errors import DTIError, Line
from dti.models.kinds import REFERENCE_MEAN_NORM

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


def _width(slot: Any) -> int:
    return int(slot.text_encoder.get_input_embeddings().weight.shape[-1])


def _usable_slots(concept: Concept, pipe: Any | None) -> tuple[dict[str, Any], list[str]]:
    """The model's encoders the concept's blocks can be compared with (same component, same width),
    and a line for each block whose width differs from its encoder's."""
    slots, problems = {}, []
    for name, slot in _slots(pipe).items():
        enc = concept.encoders.get(name)
        if enc is None:
            continue
        if enc.width != _width(slot):
            problems.append(
                f"{name} has width {enc.width} but the model's {name} has {_width(slot)}: it was trained for another base model"
            )
            continue
        slots[name] = slot
    return slots, problems


def _base_table(slot: Any) -> torch.Tensor:
    from dti.text.vocab import vocabulary_rows

    return vocabulary_rows(slot.tokenizer, slot.text_encoder)


def _stored_stats(concept: Concept, name: str) -> dict[str, float]:
    """The vocabulary norms measured at training and kept in the concept's metadata (finite numbers, a positive mean)."""
    table = concept.meta.get("vocab_norms")
    entry = table.get(name) if isinstance(table, dict) else None
    if not isinstance(entry, dict):
        return {}
    good = {
        k: float(v) for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
    }
    return good if good.get("mean", 0.0) > 0 else {}


def vocabulary_statistics(concept: Concept, pipe: Any | None = None, need: str | None = None) -> dict[str, dict[str, Any]]:
    """Per encoder, the vocabulary's norm statistics and where they come from: the model
    (measured), the concept's metadata (measured at training), or the published reference mean.

    With ``need`` (e.g. ``"max"``), an encoder without that statistic is an error naming the fix.
    """
    from dti.text.vocab import vocab_stats

    slots, _ = _usable_slots(concept, pipe)
    out = {}
    for name, enc in concept.encoders.items():
        if name in slots:
            stats, source = vocab_stats(_base_table(slots[name])).as_dict(), "model"
        elif _stored_stats(concept, name):
            stats, source = _stored_stats(concept, name), "concept metadata"
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


def _vector_counts(concept: Concept) -> list[int]:
    return sorted({e.n_vectors for e in concept.encoders.values()})


def inspect_concept(concept: Concept, pipe: Any | None = None, k: int = 8, problems: list[str] | None = None) -> dict[str, Any]:
    """A machine-readable report; ``pipe`` (optional) gives measured vocabulary statistics and neighbours.

    ``problems`` are those a lenient read found (``formats.read(..., problems=[])``); the report's
    ``problems`` adds what the vectors themselves show (NaN, infinite, all-zero or no rows, a width
    the model does not have). A block with problems is flagged ``usable: false`` with its reasons.
    """
    from dti.text.words import initializer_ids

    slots, width_problems = _usable_slots(concept, pipe)
    vocab = vocabulary_statistics(concept, pipe)
    counts = _vector_counts(concept)
    found = list(problems or [])
    if len(counts) > 1:
        found.append(f"the encoders hold different vector counts {counts}")
    report: dict[str, Any] = {
        "token": concept.token,
        "n_vectors": counts[-1] if counts else 0,
        "method": concept.method,
        "with_model": pipe is not None,
        "meta": concept.meta,
        "problems": [],
        "encoders": {},
    }
    for name, enc in concept.encoders.items():
        own = value_problems(name, enc.vectors)
        if problems is None:  # a lenient read has listed these already, in the file's own words
            found.extend(own)
        found.extend(p for p in width_problems if p.startswith(f"{name} "))
        finite = bool(torch.isfinite(enc.vectors).all()) and enc.vectors.numel() > 0
        entry: dict[str, Any] = {
            "kind": encoder_kind(enc),
            "width": enc.width,
            "fixed_magnitude": enc.magnitude,
            "norms": [round(float(n), 6) for n in enc.norms],
            "usable": not own,
        }
        slot = slots.get(name)
        stats = {k: v for k, v in vocab[name].items() if k != "source"}
        entry["vocabulary"] = stats or None
        entry["vocabulary_source"] = vocab[name]["source"]
        if own:
            entry["out_of_distribution"] = True
            entry["verdict"] = "unusable: " + "; ".join(p.removeprefix(f"{name} ") for p in own)
        elif stats:
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
        if finite and init is not None and init.shape == enc.vectors.shape:
            entry["angle_to_initializer_deg"] = [round(math.degrees(float(a)), 3) for a in sphere.angle(enc.vectors, init)]
        if finite and slot is not None:
            entry["nearest"] = nearest_tokens(enc.vectors, _base_table(slot), slot.tokenizer, k)
        report["encoders"][name] = entry
    report["problems"] = list(dict.fromkeys(found))
    return report


def _json_safe(value: Any) -> Any:
    """NaN and infinities as strings: JSON has no such numbers, and a bare NaN breaks strict readers."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def report_json(report: dict[str, Any]) -> str:
    """:func:`inspect_concept`'s report as strict JSON (non-finite numbers become strings)."""
    return json.dumps(_json_safe(json.loads(json.dumps(report, default=str))), indent=2, allow_nan=False)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable form of :func:`inspect_concept`'s report."""
    lines = [f"{report['token']}: {report['n_vectors']} vector(s), method {report['method']}"]
    init = report["meta"].get("initializer")
    if init:
        lines[0] += f", initializer '{init}'"
    problems = report.get("problems") or []
    if problems:
        lines.append(f"  PROBLEMS ({len(problems)}; other dti commands refuse a concept with unusable vectors or damaged metadata):")
        lines.extend(f"    - {p}" for p in problems)
    if not report.get("with_model", True):
        hint = Line(
            "  (no model: the norms are compared with the vocabulary statistics the concept records or the published means; "
            "pass {model} to measure them and to list each vector's nearest vocabulary words)",
            settings=["model"],
        )
        lines.append(str(hint))
    for name, e in report["encoders"].items():
        kind = "" if e["kind"].startswith("width") else f"{e['kind']}, "
        lines.append(f"  {name} ({kind}width {e['width']})")
        norms = ", ".join(f"{n:.4f}" for n in e["norms"])
        fixed = f" (fixed at {e['fixed_magnitude']:.4f})" if e.get("fixed_magnitude") else ""
        lines.append(f"    norm: {norms or 'none (no vectors)'}{fixed}")
        stats = e.get("vocabulary")
        if stats:
            parts = [f"{key} {stats[key]:.4f}" for key in ("min", "mean", "max") if key in stats]
            lines.append(f"    vocabulary norms ({e['vocabulary_source']}): {', '.join(parts)}")
        if not e.get("usable", True):
            lines.append(f"    UNUSABLE: {e['verdict'].removeprefix('unusable: ')}")
        elif "norm_over_vocab_mean" in e:
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
    lora = report.get("lora")
    if lora:
        lines.append(f"  LoRA ({lora['file']})")
        for name, part in lora["components"].items():
            lines.append(
                f"    {name}: rank {part['rank']}, alpha {part['alpha']:g}, {part['layers']} layers "
                f"({', '.join(part['targets'])}), norm of the weight change {part['norm']:.4f}"
            )
    return "\n".join(lines)


def inspect(
    source: str | os.PathLike | Concept,
    model: Any | None = None,
    *,
    top: int = 8,
    token: str | None = None,
    precision: str = "auto",
    device: str = "auto",
) -> dict[str, Any]:
    """``dti.inspect``: the report of :func:`inspect_concept` for a file or folder in any format (a bad
    file is reported with its problems listed, not refused) or a Concept; ``model`` (a loaded pipeline
    or a name) measures the vocabulary and lists the ``top`` nearest vocabulary words of each vector."""
    from dti.concepts.formats import read
    from dti.text.words import check_token_text
    from dti.use.lora import describe as describe_lora
    from dti.use.lora import lora_file
    from dti.use.pipelines import pipeline_of

    if top < 1:
        raise DTIError(f"{{top}} {top} must be at least 1 (the number of nearest words to list)", settings=["top"])
    if token is not None:
        check_token_text(token)
    problems: list[str] = []
    concept = source.renamed(token) if isinstance(source, Concept) and token else source
    concept = concept if isinstance(concept, Concept) else read(concept, token, problems=problems)
    pipe = pipeline_of(model, None, precision, device)[0] if model is not None else None
    report = inspect_concept(concept, pipe, k=top, problems=problems)
    lora = lora_file(source, concept)
    if lora is not None:  # the LoRA learned with the word (--lora): per component its rank, alpha, targets and norm
        report["lora"] = {"file": str(lora), "components": describe_lora(lora)}
    return report
