"""The researcher's path on the command line: `dti sweep` two subjects x DTI and TI on dti-mini, then
`dti evaluate` the sweep on 2 prompts x 2 seeds with the mini judge, and once more from the cache."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import torch

from dti.commands import main

MANIFEST = """
[defaults]
steps = 2
no-validation = true

[subjects.ruby]
photos = "ruby"
class = "star"
kind = "object"

[subjects.berry]
photos = "berry"
class = "heart"
kind = "object"
"""


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def test_sweep_then_evaluate_two_words_on_two_prompts_and_two_seeds(tmp_path, capsys, one_thread):
    from dti.mini import world

    for name in ("ruby", "berry"):
        folder = tmp_path / "data" / name
        folder.mkdir(parents=True)
        subject = next(s for s in world.SUBJECTS if s.name == name)
        for i, image in enumerate(world.reference_images(subject, 3)):
            image.save(folder / f"{i:02d}.png")
    manifest = tmp_path / "subjects.toml"
    manifest.write_text(f'root = "data"\n{MANIFEST}')
    sweep = tmp_path / "sweep"
    assert main(["sweep", str(manifest), "--methods", "dti,ti", "--model", "dti-mini", "--out", str(sweep), "--quiet"]) == 0
    index = json.loads((sweep / "sweep.json").read_text())
    assert sorted((r["method"], r["subject"], r["status"]) for r in index["runs"]) == [
        ("dti", "berry", "done"),
        ("dti", "ruby", "done"),
        ("ti", "berry", "done"),
        ("ti", "ruby", "done"),
    ]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a {} on the left\na {} on a dotted teal background\n")
    out = tmp_path / "report"
    argv = ["evaluate", str(sweep), "--model", "dti-mini", "--out", str(out), "--prompts", str(prompts), "--seeds", "0-1"]
    argv += ["--metrics", "mini", "--sample-steps", "2", "--guidance", "4", "--device", "cpu", "--quiet"]
    capsys.readouterr()
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert len(records) == 2 * 2 * 2 * 2  # methods x subjects x prompts x seeds
    assert {(r["method"], r["subject"]) for r in records} == {(m, s) for m in ("dti", "ti") for s in ("ruby", "berry")}
    ruby = [r for r in records if r["subject"] == "ruby"]
    assert {r["text_prompt"] for r in ruby} == {"a star on the left", "a star on a dotted teal background"}
    summary = json.loads((out / "summary.json").read_text())
    for method in ("dti", "ti"):
        mine = [r["scores"]["mini.text"] for r in records if r["method"] == method]
        overall = summary["methods"][method]["overall"]["mini.text"]
        assert abs(overall["mean"] - sum(mine) / len(mine)) < 1e-9 and overall["low"] <= overall["mean"] <= overall["high"]
    diff = summary["differences"]["dti - ti"]  # DTI - TI, paired over subject x prompt x seed
    assert diff["pairs"] == 8 and diff["per_image"]["mini.text"]["n"] == 8
    page = _Images()
    page.feed((out / "report.html").read_text())
    assert len(page.sources) >= 17 and all((out / src).is_file() for src in page.sources)  # the scatter + every image
    first_images = {r["image"]: (out / r["image"]).read_bytes() for r in records}
    # the same evaluation again, with one more seed: only the new seed's images are generated
    torch.manual_seed(123)  # generation is seeded per image; the global RNG must not matter
    assert main([*argv[:-11], "--seeds", "0-2", *argv[-9:], "--overwrite"]) == 0
    said = capsys.readouterr().out.strip().splitlines()[-1]
    assert "scored 24 image(s) (8 generated, 16 from the cache)" in said, said
    again = {r["image"]: (out / r["image"]).read_bytes() for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    assert all(again[k] == v for k, v in first_images.items())
