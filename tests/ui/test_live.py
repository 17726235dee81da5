"""What the Queue page reads from a run folder while it trains: the step, the newest sample, a chart;
a half-written last log line is skipped, and an overwrite's staging folder is where the run is."""

from __future__ import annotations

import json

from PIL import Image

from dti.ui.live import chart, read_progress


def test_progress_of_a_run_folder_being_written(tmp_path):
    run = tmp_path / "run"
    assert read_progress(run).line() == "not started"
    (run / "samples").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps": 40}))
    records = [{"step": i, "loss": None if i == 0 else 0.5 - i / 100, "norms": {"te": [9.5]}} for i in range(13)]
    (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"step": 13, "lo')
    for step in (4, 8, 12):
        Image.new("RGB", (8, 8)).save(run / "samples" / f"step-{step:06d}.png")
    p = read_progress(run)
    assert (p.step, p.steps, p.sample_step, p.sample.name) == (12, 40, 12, "step-000012.png")
    assert p.line() == "step 12 of 40, loss 0.3800, norm 9.5000"
    image = chart(p.records)
    assert image.size[0] > 300 and image.getextrema() != ((255, 255), (255, 255), (255, 255))
    assert chart([]) is None


def test_an_overwrite_in_progress_is_read_from_its_staging_folder(tmp_path):
    run = tmp_path / "run"
    (run / ".dti-overwrite").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"steps": 10}))
    (run / "train_log.jsonl").write_text(json.dumps({"step": 10, "loss": 0.1, "norms": {"te": [1.0]}}) + "\n")
    (run / ".dti-overwrite" / "config.json").write_text(json.dumps({"steps": 30}))
    (run / ".dti-overwrite" / "train_log.jsonl").write_text(json.dumps({"step": 3, "loss": 0.2, "norms": {"te": [1.0]}}) + "\n")
    assert (read_progress(run).step, read_progress(run).steps) == (3, 30)
