"""The New word form without the page: the word is checked against the model's tokenizers, and Start
copies the photos into the workspace and queues exactly the command shown."""

from __future__ import annotations

import pytest
from tests.ui.conftest import mini_photos

from dti.commands import build_parser
from dti.core.errors import DTIError
from dti.ui import forms
from dti.ui.queue import Queue


def test_the_word_is_checked_against_the_tokenizer():
    forms.check_word("dti-mini", "<ruby>", "star")
    with pytest.raises(DTIError, match="star"):
        forms.check_word("dti-mini", "star", "star")  # not a new word
    with pytest.raises(DTIError, match="is not in the vocabulary"):
        forms.check_word("dti-mini", "<ruby>", "zebra-ish")


def test_start_copies_the_photos_and_queues_the_command(workspace, tmp_path):
    photos = sorted(mini_photos(tmp_path / "up").iterdir())
    queue = Queue(workspace.queue_file)
    job = forms.queue_word(workspace, queue, photos, "dti-mini", "<ruby>", "star", "dti", {"steps": 12})
    again = forms.queue_word(workspace, queue, photos, "dti-mini", "<ruby>", "star", "dti", {})
    assert (job.output, again.output) == ("runs/ruby", "runs/ruby-2")  # never two runs into one folder
    assert sorted(p.name for p in (workspace.root / "photos" / "ruby").iterdir()) == ["00.png", "01.png", "02.png", "03.png"]
    args = build_parser().parse_args(job.argv)
    assert (args.photos, args.output, args.steps) == ("photos/ruby", "runs/ruby", 12)
    with pytest.raises(DTIError, match="no photos"):
        forms.queue_word(workspace, queue, [], "dti-mini", "<sky>", "square", "dti", {})
    with pytest.raises(DTIError, match="models/ folder"):
        forms.queue_word(workspace, queue, photos, "/opt/elsewhere/model", "<sky>", "square", "dti", {})
    assert len(queue.jobs()) == 2
