"""Grid labels: cut to the cell's width, with few font measurements however long the label."""

from __future__ import annotations

from PIL import Image

from dti.core.images import _clip, _font, grid


def _reference(text, width, font):  # the obvious one-character-at-a-time cut
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def test_labels_are_cut_to_the_longest_prefix_that_fits():
    font = _font()
    for text in ["", "short", "a <my-tok> dog on the beach", "W" * 40, "i" * 200, "a photo of " + "very " * 30 + "fluffy"]:
        for width in (0, 10, 60, 96, 300):
            assert _clip(text, width, font) == _reference(text, width, font), (text, width)


def test_a_huge_label_costs_few_measurements():
    """A 2000-word prompt as a contact sheet's row label took ~50 s (10k font measurements)."""

    class Counting:
        def __init__(self):
            self.font, self.calls = _font(), 0

        def getlength(self, text):
            self.calls += 1
            return self.font.getlength(text)

    font = Counting()
    out = _clip("very " * 2000, 96, font)
    assert out.endswith("...") and font.font.getlength(out) <= 96 and font.calls <= 20, font.calls
    sheet = grid([[Image.new("RGB", (32, 32))]], row_labels=["very " * 2000], col_labels=["seed 0"])
    assert sheet.width < 1000
