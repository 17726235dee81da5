"""The one report writer: every evaluation (``dti evaluate``, the demo, the mini benchmark) ends here.

Input is generic: a list of records, one per scored image,
``{method, subject, kind, prompt, text_prompt, seed, image, scores: {metric_key: float}}``
(``image`` relative to ``out``; ``kind`` and ``text_prompt`` optional), plus the scorers' infos.
A metric key is ``<scorer>.image`` or ``<scorer>.text`` (:func:`metric_key`). Written together,
all or none: ``scores.jsonl``, ``summary.json``, ``report.md``, ``report.html`` (one page that
opens from disk) and ``scatter.png``. Every mean carries a 95% bootstrap interval, over images
and over subject means; every method is compared with TI on paired images when both are there.
A caller adds its own sections as ``(heading, markdown text)`` or ``(heading, text, image path
relative to out)``: the demo's learned words and slerp path, the benchmark's norms and probe.
"""

from __future__ import annotations

import html
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dti.core.files import atomic_write_all
from dti.evaluation.markup import inline, to_html
from dti.evaluation.protocol import ScorerInfo
from dti.evaluation.stats import LEVEL, RESAMPLES, Interval, bootstrap, paired_difference

REPORT_FILES = ("scores.jsonl", "summary.json", "report.md", "report.html", "scatter.png")
REFERENCE_METHOD = "ti"


def metric_key(scorer: str, which: str) -> str:
    """The key of a scorer's image (``which="image"``) or text score in a record's ``scores``."""
    if which not in ("image", "text"):
        raise ValueError(f"which must be image or text, not {which!r}")
    return f"{scorer}.{which}"


def _split(key: str) -> tuple[str, str]:
    name, _, which = key.rpartition(".")
    return (name, which) if which in ("image", "text") else (key, "")


def metric_label(key: str, scorers: Mapping[str, ScorerInfo]) -> str:
    """What a column is called: the metric's own name (DINOv2, SigLIP, ...) and what it measures."""
    name, which = _split(key)
    info = scorers.get(name)
    metric = (info.image_metric if which == "image" else info.text_metric) if info else None
    return metric or f"{name} {which or 'score'}"


def headline_keys(scorers: Mapping[str, ScorerInfo], metrics: Sequence[str]) -> tuple[str | None, str | None]:
    """The report's "image sim" and "text sim": the first scorer (in order given) with each."""
    image = next((metric_key(n, "image") for n, i in scorers.items() if i.image_metric and metric_key(n, "image") in metrics), None)
    text = next((metric_key(n, "text") for n, i in scorers.items() if i.text_metric and metric_key(n, "text") in metrics), None)
    return image, text


def _value(record: Mapping[str, Any], key: str) -> float | None:
    value = record.get("scores", {}).get(key)
    if value is None or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _pair_key(record: Mapping[str, Any]) -> tuple[str, str, int]:
    return (str(record["subject"]), str(record.get("text_prompt") or record["prompt"]), int(record["seed"]))


def _ordered(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _intervals(values_by_subject: Mapping[str, list[float]]) -> tuple[Interval, Interval] | None:
    flat = [v for vs in values_by_subject.values() for v in vs]
    if not flat:
        return None
    means = [sum(vs) / len(vs) for vs in values_by_subject.values() if vs]
    return bootstrap(flat), bootstrap(means)


def summarize(records: Sequence[Mapping[str, Any]], scorers: Mapping[str, ScorerInfo], settings: Mapping[str, Any], title: str) -> dict:
    """The numbers of the report (what summary.json holds)."""
    methods = _ordered([str(r["method"]) for r in records])
    metrics = _ordered([k for r in records for k in r.get("scores", {})])
    image_key, text_key = headline_keys(scorers, metrics)
    by_method: dict[str, Any] = {}
    for method in methods:
        mine = [r for r in records if str(r["method"]) == method]
        subjects = _ordered([str(r["subject"]) for r in mine])
        entry: dict[str, Any] = {"images": len(mine), "subjects": subjects, "overall": {}, "over_subjects": {}, "per_subject": {}}
        for key in metrics:
            groups = {s: [v for r in mine if str(r["subject"]) == s and (v := _value(r, key)) is not None] for s in subjects}
            found = _intervals(groups)
            if found is None:
                continue
            entry["overall"][key], entry["over_subjects"][key] = found[0].as_dict(), found[1].as_dict()
            for s, vs in groups.items():
                if vs:
                    entry["per_subject"].setdefault(s, {})[key] = sum(vs) / len(vs)
        by_method[method] = entry
    return {
        "title": title,
        "metrics": {k: {"label": metric_label(k, scorers), "scorer": _split(k)[0], "measures": _split(k)[1]} for k in metrics},
        "headline": {"image": image_key, "text": text_key},
        "methods": by_method,
        "differences": differences(records, methods, metrics),
        "scorers": {name: info.as_dict() for name, info in scorers.items()},
        "masks_used": bool(settings.get("masks")),
        "settings": dict(settings),
        "bootstrap": {"resamples": RESAMPLES, "level": LEVEL, "seed": 0},
    }


def differences(records: Sequence[Mapping[str, Any]], methods: Sequence[str], metrics: Sequence[str]) -> dict[str, Any]:
    """Each method minus TI on the images both have (same subject, prompt and seed): per image,
    and over the subjects' mean differences. Empty when there is no TI."""
    reference = next((m for m in methods if m.lower() == REFERENCE_METHOD), None)
    if reference is None:
        return {}
    base = {_pair_key(r): r for r in records if str(r["method"]) == reference}
    out: dict[str, Any] = {}
    for method in methods:
        if method == reference:
            continue
        pairs = [(r, base[_pair_key(r)]) for r in records if str(r["method"]) == method and _pair_key(r) in base]
        entry: dict[str, Any] = {"reference": reference, "pairs": len(pairs), "per_image": {}, "over_subjects": {}}
        for key in metrics:
            diffs: dict[str, list[float]] = {}
            a, b = [], []
            for r, t in pairs:
                x, y = _value(r, key), _value(t, key)
                if x is not None and y is not None:
                    a.append(x)
                    b.append(y)
                    diffs.setdefault(str(r["subject"]), []).append(x - y)
            if not a:
                continue
            entry["per_image"][key] = paired_difference(a, b).as_dict()
            entry["over_subjects"][key] = bootstrap([sum(d) / len(d) for d in diffs.values()]).as_dict()
        if pairs:
            out[f"{method} - {reference}"] = entry
    return out


def _fmt(iv: Mapping[str, Any] | None) -> str:
    if not iv:
        return "-"
    return str(Interval(iv["mean"], iv["low"], iv["high"], iv["n"], iv.get("level", LEVEL)))


def table_columns(summary: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, metric key) per column: image sim, text sim, then every other metric."""
    image_key, text_key = summary["headline"]["image"], summary["headline"]["text"]
    labels = {k: v["label"] for k, v in summary["metrics"].items()}
    cols = []
    if image_key:
        cols.append((f"image sim ({labels[image_key]})", image_key))
    if text_key:
        cols.append((f"text sim ({labels[text_key]})", text_key))
    cols += [(labels[k], k) for k in summary["metrics"] if k not in (image_key, text_key)]
    return cols


def _rows(summary: Mapping[str, Any], over: str) -> tuple[list[str], list[list[str]]]:
    cols = table_columns(summary)
    header = ["method", "subjects", "images", *[label for label, _ in cols]]
    rows = []
    for method, entry in summary["methods"].items():
        rows.append([method, str(len(entry["subjects"])), str(entry["images"]), *[_fmt(entry[over].get(k)) for _, k in cols]])
    return header, rows


def _diff_rows(summary: Mapping[str, Any], over: str) -> tuple[list[str], list[list[str]]]:
    cols = table_columns(summary)
    header = ["difference", "pairs", *[label for label, _ in cols]]
    rows = [[name, str(e["pairs"]), *[_fmt(e[over].get(k)) for _, k in cols]] for name, e in summary["differences"].items()]
    return header, rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(cell: str) -> str:
        return str(cell).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _shown_settings(settings: Mapping[str, Any]) -> str:
    """The settings as JSON, long lists of records (every run) summarized: summary.json has them all."""
    shown = {
        k: f"{len(v)} entries (see summary.json)" if isinstance(v, list) and len(v) > 10 and all(isinstance(x, dict) for x in v) else v
        for k, v in settings.items()
    }
    return json.dumps(shown, indent=2, default=str)


def _scorer_lines(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, info in summary["scorers"].items():
        rev = f", revision {info['revision']}" if info.get("revision") else ""
        notes = f"; {info['notes']}" if info.get("notes") else ""
        lines.append(f"{name}: {info['backbone']}{rev}; scale: {info['scale']}{notes}")
    return lines


def markdown(summary: Mapping[str, Any], extra_sections: Sequence[tuple[str, ...]] = ()) -> str:
    level = round(summary["bootstrap"]["level"] * 100)
    parts = [f"# {summary['title']}", ""]
    note = f"Means with {level}% bootstrap intervals over images (`mean [low, high]`); scores from different backbones are not comparable."
    parts += [note, ""]
    parts += ["## Methods", "", _md_table(*_rows(summary, "overall")), ""]
    parts += ["## Methods, over subject means", "", "Each subject counts once.", "", _md_table(*_rows(summary, "over_subjects")), ""]
    if summary["differences"]:
        parts += ["## Paired differences", "", "Same subject, prompt and seed; per image.", ""]
        parts += [_md_table(*_diff_rows(summary, "per_image")), ""]
    parts += ["![image vs text similarity](scatter.png)", "", "## Scorers", ""]
    parts += [f"- {line}" for line in _scorer_lines(summary)]
    parts += ["", "## Settings", "", "```json", _shown_settings(summary["settings"]), "```", ""]
    for heading, text, *image in extra_sections:
        parts += [f"## {heading}", "", text.rstrip(), ""]
        parts += [f"![{heading}]({quote(Path(image[0]).as_posix())})", ""] if image else []
    return "\n".join(parts)


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;text-align:left;vertical-align:top}"
    "figure{display:inline-block;margin:4px;text-align:center;font-size:11px}figure img{width:160px;height:auto;image-rendering:auto}"
    "h3{margin-top:1.5em}.prompt{font-style:italic}img{max-width:100%}"
    "pre{white-space:pre-wrap;overflow-wrap:anywhere}td{overflow-wrap:anywhere}code{background:#f4f4f4;padding:0 2px}"
)


def _src(path: str) -> str:
    return html.escape(quote(Path(path).as_posix()), quote=True)


def html_page(summary: Mapping[str, Any], records: Sequence[Mapping[str, Any]], extra_sections: Sequence[tuple[str, ...]] = ()) -> str:
    """One self-contained page: no script, no server; images by relative path."""
    e = html.escape
    labels = {k: v["label"] for k, v in summary["metrics"].items()}
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{e(summary['title'])}</title><style>{_CSS}</style></head><body>"]
    parts.append(f"<h1>{e(summary['title'])}</h1><h2>Methods</h2>{_html_table(*_rows(summary, 'overall'))}")
    parts.append(f"<h2>Methods, over subject means</h2>{_html_table(*_rows(summary, 'over_subjects'))}")
    if summary["differences"]:
        parts.append(f"<h2>Paired differences (per image)</h2>{_html_table(*_diff_rows(summary, 'per_image'))}")
    parts.append("<img src='scatter.png' alt='image vs text similarity' style='max-width:600px'>")
    parts.append("<h2>Scorers</h2><ul>" + "".join(f"<li>{e(line)}</li>" for line in _scorer_lines(summary)) + "</ul>")
    parts.append(f"<h2>Settings</h2><pre>{e(_shown_settings(summary['settings']))}</pre>")
    for heading, text, *image in extra_sections:  # the callers' Markdown, rendered: tables as tables, code as code
        parts.append(f"<h2>{inline(heading)}</h2>{to_html(text)}")
        if image:
            parts.append(f"<img src='{_src(image[0])}' alt='{e(heading.replace('`', ''), quote=True)}'>")
    parts.append("<h2>Images</h2>")
    for subject in _ordered([str(r["subject"]) for r in records]):
        parts.append(f"<h3>{e(subject)}</h3>")
        mine = [r for r in records if str(r["subject"]) == subject]
        for text in _ordered([str(r.get("text_prompt") or r["prompt"]) for r in mine]):
            parts.append(f"<p class='prompt'>{e(text)}</p><div>")
            for r in (r for r in mine if str(r.get("text_prompt") or r["prompt"]) == text):
                scores = "<br>".join(f"{e(labels.get(k, k))}: {v:.3f}" for k, v in r.get("scores", {}).items() if v is not None)
                caption = f"{e(str(r['method']))}, seed {int(r['seed'])}<br>{scores}"
                img = f"<img src='{_src(r['image'])}' loading='lazy' alt='{e(str(r['prompt']), quote=True)}'>"
                parts.append(f"<figure>{img}<figcaption>{caption}</figcaption></figure>")
            parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def scatter_figure(summary: Mapping[str, Any]):
    """Image similarity against text similarity, one point per method with its intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    image_key, text_key = summary["headline"]["image"], summary["headline"]["text"]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    plotted = False
    if image_key and text_key:
        for method, entry in summary["methods"].items():
            x, y = entry["overall"].get(image_key), entry["overall"].get(text_key)
            if not x or not y:
                continue
            ax.errorbar(
                x["mean"],
                y["mean"],
                xerr=[[x["mean"] - x["low"]], [x["high"] - x["mean"]]],
                yerr=[[y["mean"] - y["low"]], [y["high"] - y["mean"]]],
                fmt="o",
                capsize=3,
                label=method,
            )
            ax.annotate(method, (x["mean"], y["mean"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
            plotted = True
        ax.set_xlabel(f"image similarity ({summary['metrics'][image_key]['label']})")
        ax.set_ylabel(f"text similarity ({summary['metrics'][text_key]['label']})")
    if not plotted:
        ax.text(0.5, 0.5, "needs an image and a text metric", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    ax.set_title("image vs text similarity (95% intervals)", fontsize=10)
    fig.tight_layout()
    return fig, plt


def _json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(dict(record), sort_keys=False, default=str)


def write_report(
    records: Sequence[Mapping[str, Any]],
    scorers: Mapping[str, ScorerInfo],
    out: str | os.PathLike,
    title: str,
    settings: Mapping[str, Any],
    extra_sections: Sequence[tuple[str, ...]] = (),
) -> dict[str, Any]:
    """Write the five report files into ``out`` (all or none) and return the summary."""
    if not records:
        raise ValueError("write_report needs at least one record")
    for r in records:
        missing = [k for k in ("method", "subject", "prompt", "seed", "image", "scores") if k not in r]
        if missing:
            raise ValueError(f"record {dict(r)!r} lacks {', '.join(missing)}")
    out = Path(out)
    summary = summarize(records, scorers, settings, title)
    fig, plt = scatter_figure(summary)
    texts = {
        "scores.jsonl": "".join(_json_line(r) + "\n" for r in records),
        "summary.json": json.dumps(summary, indent=2, default=str) + "\n",
        "report.md": markdown(summary, extra_sections),
        "report.html": html_page(summary, records, extra_sections),
    }

    def text_writer(text: str):
        return lambda tmp: Path(tmp).write_text(text, encoding="utf-8")

    try:
        items = [(out / name, text_writer(text)) for name, text in texts.items()]
        items.append((out / "scatter.png", lambda tmp: fig.savefig(tmp, format="png", dpi=110)))
        atomic_write_all(items)
    finally:
        plt.close(fig)
    return summary
