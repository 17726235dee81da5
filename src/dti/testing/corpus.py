"""The words tiny SentencePiece tokenizers (T5, Gemma) are built from.

dti's own prompt templates and validation prompts, the DreamBooth class words and evaluation
prompts, and a few compositional ones, so that every prompt the tests and examples use
tokenizes to whole-word pieces, as it would with the real vocabularies.
"""

from __future__ import annotations

from collections import Counter

from dti.text.templates import DEFAULT_VALIDATION_PROMPTS, TEMPLATE_SETS

CLASS_WORDS = (
    "backpack bowl can candle cat clock sneaker dog toy boot stuffed animal glasses cartoon teapot vase "
    "star triangle square circle mug plushie person style painting"
)

PROMPTS = (
    "in the jungle",
    "in the snow",
    "on the beach",
    "on a cobblestone street",
    "on top of pink fabric",
    "on top of a wooden floor",
    "with a city in the background",
    "with a mountain in the background",
    "with a blue house in the background",
    "on top of a purple rug in a forest",
    "with a wheat field in the background",
    "with a tree and autumn leaves in the background",
    "with the Eiffel Tower in the background",
    "floating on top of water",
    "floating in an ocean of milk",
    "on top of green grass with sunflowers around it",
    "on top of a mirror",
    "on top of the sidewalk in a crowded street",
    "on top of a dirt road",
    "on top of a white rug",
    "a red",
    "a purple",
    "a shiny",
    "a wet",
    "a cube shaped",
    "wearing a red hat",
    "wearing a santa hat",
    "wearing a rainbow scarf",
    "wearing a black top hat and a monocle",
    "in a chef outfit",
    "in a firefighter outfit",
    "in a police outfit",
    "wearing pink glasses",
    "wearing a yellow shirt",
    "in a purple wizard outfit",
    "a watercolor painting of a",
    "reading a book",
    "riding a bicycle",
    "at night",
    "under the moon",
    "oil painting",
)


def sentences() -> list[str]:
    """Every line of the corpus, lower case (SANA lower-cases its prompts)."""
    lines = [
        t.format(w) for t in (*TEMPLATE_SETS["object"], *TEMPLATE_SETS["style"], *DEFAULT_VALIDATION_PROMPTS) for w in CLASS_WORDS.split()
    ]
    lines += [f"a {w} {p}" for w in CLASS_WORDS.split() for p in PROMPTS]
    return [line.lower() for line in lines]


def word_counts() -> Counter[str]:
    """Whitespace-separated words of the corpus with their counts."""
    return Counter(word for line in sentences() for word in line.split())
