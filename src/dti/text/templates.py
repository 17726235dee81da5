"""Prompt templates: the sentences a word is trained in, and the rule every template follows.

A template holds ``{}`` once, where the token goes (``str.format`` fills it), and no other field;
literal braces are written ``{{ }}``. The sets are Textual Inversion's (Gal et al. 2022), as the
paper trains with them, plus a bare one for small vocabularies.
"""

from __future__ import annotations

import string

from dti.core.errors import DTIError

# Textual Inversion's object templates (Gal et al. 2022), the prompts of the paper's training.
OBJECT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)

STYLE_TEMPLATES = (
    "a painting in the style of {}",
    "a rendering in the style of {}",
    "a cropped painting in the style of {}",
    "the painting in the style of {}",
    "a clean painting in the style of {}",
    "a dark painting in the style of {}",
    "a picture in the style of {}",
    "a cool painting in the style of {}",
    "a close-up painting in the style of {}",
    "a bright painting in the style of {}",
    "a good painting in the style of {}",
    "a rendition in the style of {}",
    "a nice painting in the style of {}",
    "a small painting in the style of {}",
    "a weird painting in the style of {}",
    "a large painting in the style of {}",
)

# For small vocabularies that know no "photo"/"rendering" (dti-mini): the bare word.
BARE_TEMPLATES = ("a {}",)

TEMPLATE_SETS = {"object": OBJECT_TEMPLATES, "style": STYLE_TEMPLATES, "bare": BARE_TEMPLATES}

#: What `dti train` renders its samples with when the model suggests nothing.
DEFAULT_VALIDATION_PROMPTS = ("a photo of a {}", "a {} in the snow")


def template_problem(text: str) -> str | None:
    """What is wrong with a template (read after what names it), or None: it holds ``{}`` once and no
    other ``{...}`` field (``str.format`` would fail on ``{style}`` or ``{0}`` at the first step)."""
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        return f"{text!r} is not a valid template ({exc}); write {{}} where the token goes, {{{{ }}}} for braces"
    if fields == [""]:
        return None
    other = [f"{{{name}}}" for name in fields if name]
    problem = f"has the field {other[0]}" if other else ("needs {} where the token goes" if not fields else "has {} more than once")
    return f"{text!r} {problem}; write {{}} once where the token goes (and {{{{ }}}} for literal braces)"


def check_template(text: str, setting: str) -> None:
    """Refuse, in one line naming ``setting``, a template :func:`template_problem` finds wrong."""
    found = template_problem(text)
    if found:
        raise DTIError("{" + setting + "} " + found, settings=[setting])
