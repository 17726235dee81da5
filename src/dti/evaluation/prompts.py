"""The prompts an evaluation generates: DreamBooth's 25 per subject kind, our compositional set, or a file.

Every prompt is a template with one ``{}`` where the subject goes. What ``{}`` becomes is a
documented choice (:data:`SUBJECT_FORMS`): the paper's reference code fills it with the learned
token alone ("a <dog> in the snow"), and so do we by default; ``"token+class"`` gives DreamBooth's
own "{0} {1}" form ("a <dog> dog in the snow"). Either way a text metric reads the prompt with the
class word in place of the subject (:func:`dti.evaluation.protocol.class_prompt`), "a dog in the snow".
"""

from __future__ import annotations

import os
from pathlib import Path

from dti.core.errors import DTIError

SUBJECT = "{}"

# DreamBooth's two lists (prompts_and_classes.txt), "{0} {1}" written as one "{}": both open with the
# same 10 settings and close with the same 5 appearance changes; 10 prompts in between differ.
_SETTINGS: tuple[str, ...] = (
    "a {} in the jungle",
    "a {} in the snow",
    "a {} on the beach",
    "a {} on a cobblestone street",
    "a {} on top of pink fabric",
    "a {} on top of a wooden floor",
    "a {} with a city in the background",
    "a {} with a mountain in the background",
    "a {} with a blue house in the background",
    "a {} on top of a purple rug in a forest",
)
_APPEARANCES: tuple[str, ...] = (
    "a red {}",
    "a purple {}",
    "a shiny {}",
    "a wet {}",
    "a cube shaped {}",
)

#: DreamBooth's object prompts.
OBJECT_PROMPTS: tuple[str, ...] = (
    *_SETTINGS,
    "a {} with a wheat field in the background",
    "a {} with a tree and autumn leaves in the background",
    "a {} with the Eiffel Tower in the background",
    "a {} floating on top of water",
    "a {} floating in an ocean of milk",
    "a {} on top of green grass with sunflowers around it",
    "a {} on top of a mirror",
    "a {} on top of the sidewalk in a crowded street",
    "a {} on top of a dirt road",
    "a {} on top of a white rug",
    *_APPEARANCES,
)

#: DreamBooth's live-subject prompts (pets: the reference code treats classes cat and dog as live).
LIVE_PROMPTS: tuple[str, ...] = (
    *_SETTINGS,
    "a {} wearing a red hat",
    "a {} wearing a santa hat",
    "a {} wearing a rainbow scarf",
    "a {} wearing a black top hat and a monocle",
    "a {} in a chef outfit",
    "a {} in a firefighter outfit",
    "a {} in a police outfit",
    "a {} wearing pink glasses",
    "a {} wearing a yellow shirt",
    "a {} in a purple wizard outfit",
    *_APPEARANCES,
)

#: Ours: each prompt asks for two or more things at once (clothing or accessory, action, setting,
#: style), the prompts on which an inflated token loses the extras.
COMPOSITIONAL_LIVE: tuple[str, ...] = (
    "a {} wearing a red scarf, running through a snowy forest",
    "a watercolor painting of a {} wearing a straw hat on a sunny beach",
    "a {} in a yellow raincoat jumping over puddles on a city street at night",
    "an oil painting of a {} wearing a golden crown, sitting on a velvet throne",
    "a {} wearing sunglasses, riding a skateboard along a seaside boardwalk",
    "a pencil sketch of a {} wearing a bow tie, reading a book in a library",
    "a {} in a space suit floating above the surface of the moon, digital art",
    "a {} wearing a chef hat, baking bread in a rustic kitchen",
    "a {} wearing a knitted sweater, sleeping by a fireplace in a log cabin",
    "pixel art of a {} wearing a wizard hat, casting a spell in a dark cave",
    "a {} with a blue backpack, hiking up a mountain trail at sunrise",
    "a comic book drawing of a {} wearing headphones, dancing at a neon-lit party",
    "a {} wearing a cowboy hat, sitting on a hay bale in a wheat field at sunset",
    "a 3d render of a {} in a superhero cape, flying over a city skyline",
    "an impressionist painting of a {} wearing a flower crown, lying in a meadow of tulips",
    "a children's book illustration of a {} in rain boots, splashing in a puddle on a cobblestone street",
)

#: The same kinds of constraint for objects, where clothing makes no sense: setting, relation,
#: material or state, style.
COMPOSITIONAL_OBJECT: tuple[str, ...] = (
    "a watercolor painting of a {} on a wooden table in a cozy cafe",
    "a {} floating in a swimming pool next to an inflatable flamingo",
    "an oil painting of a {} on a windowsill during a thunderstorm",
    "a polaroid photo of a {} half buried in the sand on a beach at sunset",
    "a 3d render of a {} on a shelf inside a futuristic spaceship",
    "a pencil sketch of a {} next to a stack of old books in a library",
    "a {} covered in snow on a park bench at night under a street lamp",
    "a {} on a picnic blanket beside a basket of strawberries in a meadow",
    "pixel art of a {} on top of a treasure chest in a dark cave",
    "a {} on a rock in a mountain stream, surrounded by autumn leaves",
    "a cyberpunk illustration of a {} on a neon-lit street in the rain",
    "a {} on a desk between a laptop and a cup of coffee, lit by morning sun",
    "a {} in a glass display case in a museum, lit by a single spotlight",
    "a {} on the hood of a red vintage car on a desert highway",
    "a {} made of gold, resting on a velvet cushion in a royal palace",
    "an anime drawing of a {} on a floating island above the clouds",
)

KINDS = ("object", "live")
SETS = ("dreambooth", "compositional", "dreambooth+compositional")
#: What ``{}`` becomes: the token alone (the reference code's choice, our default) or "token class".
SUBJECT_FORMS = ("token", "token+class")
#: Classes the reference code evaluates with the live prompts.
LIVE_CLASSES = frozenset({"cat", "dog"})


def default_kind(class_word: str) -> str:
    """``live`` for the classes DreamBooth's live prompts are written for (cat, dog), else ``object``."""
    return "live" if class_word.strip().lower() in LIVE_CLASSES else "object"


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise DTIError(f"subject kind {kind!r} is not valid; use object or live")
    return kind


def subject_text(token: str, class_word: str, form: str = "token") -> str:
    """What ``{}`` becomes in a generation prompt."""
    if form == "token":
        return token
    if form == "token+class":
        return f"{token} {class_word}"
    raise DTIError(f"subject form {form!r} is not valid; use token or token+class")


def fill(template: str, subject: str) -> str:
    """The template with its one ``{}`` replaced (str.replace: no other brace means anything)."""
    return template.replace(SUBJECT, subject, 1)


def check_template(text: str, where: str) -> str:
    """A template has exactly one ``{}`` and no other brace."""
    if text.count(SUBJECT) != 1 or "{" in text.replace(SUBJECT, "") or "}" in text.replace(SUBJECT, ""):
        n = text.count(SUBJECT)
        found = f"{n} {{}}" if n != 1 else "a brace besides its {}"
        raise DTIError(f"{where} has {found}; write exactly one {{}} where the subject goes, e.g. 'a {{}} in the snow'")
    return text


def load_prompt_file(path: str | os.PathLike) -> list[str]:
    """One template per line, each with exactly one ``{}``; blank lines and ``#`` comments are skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DTIError(f"prompt file {path} is not UTF-8 text; save it as UTF-8, one prompt per line") from None
    except OSError as exc:
        raise DTIError(f"cannot read prompt file {path}: {exc.strerror or exc}; check the path") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        prompts.append(" ".join(check_template(line, f"{path} line {number}").split()))
    if not prompts:
        raise DTIError(f"prompt file {path} holds no prompts; write one prompt per line with {{}} where the subject goes")
    return prompts


def prompt_set(name_or_path: str | os.PathLike, kind: str) -> list[str]:
    """The templates of a named set for a subject of ``kind`` (object / live), or of a prompt file."""
    check_kind(kind)
    name = str(name_or_path)
    dreambooth = list(LIVE_PROMPTS if kind == "live" else OBJECT_PROMPTS)
    compositional = list(COMPOSITIONAL_LIVE if kind == "live" else COMPOSITIONAL_OBJECT)
    if name == "dreambooth":
        return dreambooth
    if name == "compositional":
        return compositional
    if name == "dreambooth+compositional":
        return dreambooth + compositional
    if Path(name).is_file():
        return load_prompt_file(name)
    raise DTIError(f"unknown prompt set {name!r}: no such set or file; use {', '.join(SETS)} or a file with one prompt per line")
