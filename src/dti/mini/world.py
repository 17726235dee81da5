"""The toy world's public face: scene distributions, named subjects, held-out combinations, prompts.

A tiny text-to-image model is trained on ``sample_caption`` and then personalized on a
``Subject``: a specific instance (shape + colour + appearance) that base training never shows,
just as a photo of "my dog" is not in a model's training set. Held-out (shape, colour, texture)
combinations measure the base model's compositional generalization. The vocabulary, scene types,
rendering and caption grammar live in `dti.mini.scene`, `dti.mini.render` and `dti.mini.text`
and are re-exported here.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image

from dti.mini.render import render
from dti.mini.scene import (
    BG_COLOURS,
    COLOURS,
    JITTER,
    MARKS,
    NO_HOLE,
    RELATIONS,
    SHAPES,
    SIZES,
    SLOTS,
    TEXTURES,
    Appearance,
    Background,
    Scene,
    Subject,
    Thing,
    layout_ok,
    relation_of,
)
from dti.mini.text import DROP, TOKEN_PATTERN, caption, fidelity, parse_caption, spec, vocabulary, write

__all__ = [
    "BG_COLOURS",
    "COLOURS",
    "DROP",
    "MARKS",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "SLOTS",
    "SUBJECTS",
    "TEXTURES",
    "Appearance",
    "Background",
    "Scene",
    "Subject",
    "Thing",
    "caption",
    "compositional_prompts",
    "fidelity",
    "heldout",
    "heldout_scenes",
    "in_training",
    "parse_caption",
    "random_scene",
    "realize",
    "reference_images",
    "reference_scenes",
    "render",
    "sample_appearance",
    "sample_caption",
    "sample_layout",
    "sample_scene",
    "spec",
    "subjects",
    "vocabulary",
    "write",
]

COUNT_WEIGHTS = (0.45, 0.35, 0.20)  # 1, 2, 3 objects
RELATION_PAIR_RATE = 0.5  # two-object scenes: chance of a relation pair (where large objects fit)
# Base training: most objects plain; each appearance feature independently with this chance.
BASE_RATES = {"mark": 0.2, "tone": 0.15, "outline": 0.15}
REFERENCE_SMALL_EVERY = 5  # every fifth reference photo shows the subject small, the others large

SUBJECTS: tuple[Subject, ...] = (
    Subject("ruby", "star", "red", Appearance(mark="dot", outline="yellow"), "dev"),
    Subject("mint", "circle", "green", Appearance(mark="bar", tone="yellow"), "dev"),
    Subject("berry", "heart", "purple", Appearance(mark="hole", outline="pink"), "dev"),
    Subject("sky", "square", "blue", Appearance(tone="yellow", outline="white"), "dev"),
    Subject("ember", "triangle", "orange", Appearance(mark="dot", tone="red"), "dev"),
    Subject("frost", "diamond", "white", Appearance(mark="bar", outline="blue"), "dev"),
    Subject("coral", "ring", "pink", Appearance(mark="dot", outline="red"), "eval"),
    Subject("jade", "circle", "green", Appearance(mark="dot", outline="blue"), "eval"),  # mint's look-alike class
    Subject("plum", "star", "purple", Appearance(tone="orange", outline="white"), "eval"),
    Subject("lemon", "cross", "yellow", Appearance(mark="hole", tone="blue"), "eval"),
    Subject("sapphire", "square", "blue", Appearance(mark="hole", tone="white"), "eval"),  # sky's look-alike class
)
_SUBJECT_INSTANCES = frozenset(s.instance for s in SUBJECTS)


def subjects(split: str | None = None) -> list[Subject]:
    """The named subjects, optionally only the ``"dev"`` or ``"eval"`` split."""
    return [s for s in SUBJECTS if split is None or s.split == split]


def heldout(shape: str, colour: str, texture: str) -> bool:
    """Whether an object of this class and colour on this texture is held out of base training.

    A fixed balanced rule rather than a hash: 32 of the 320 triples (10%), every shape and every
    colour held out on exactly 4 textures, every texture holding out 6-7 (shape, colour) pairs.
    """
    s, c, t = SHAPES.index(shape), list(COLOURS).index(colour), TEXTURES.index(texture)
    return (s + c) % 2 == 0 and t == (3 * s + c) % 5


def sample_appearance(rng: random.Random, shape: str, colour: str, rates: dict[str, float] | None = None) -> Appearance:
    """Each feature independently present with its rate (default: base training's ``BASE_RATES``)."""
    rates = BASE_RATES if rates is None else rates
    others = [c for c in COLOURS if c != colour]
    marks = [m for m in MARKS[1:] if not (shape in NO_HOLE and m == "hole")]
    return Appearance(
        mark=rng.choice(marks) if rng.random() < rates["mark"] else "none",
        tone=rng.choice(others) if rng.random() < rates["tone"] else None,
        outline=rng.choice(others) if rng.random() < rates["outline"] else None,
    )


def sample_layout(rng: random.Random, max_objects: int = 3) -> list[tuple[str, str]]:
    """(position, size) per object, always a valid layout."""
    n = rng.choices(range(1, max_objects + 1), weights=COUNT_WEIGHTS[:max_objects])[0]
    if n == 1:
        return [(rng.choice(SLOTS), rng.choice(SIZES))]
    if n == 2 and rng.random() < RELATION_PAIR_RATE:
        return [(pos, rng.choice(SIZES)) for pos in rng.choice(list(RELATIONS.values()))]
    while True:
        positions = rng.sample(SLOTS, n)
        if n == 3 or sorted(positions) not in [sorted(p) for p in RELATIONS.values()]:
            return [(pos, "small") for pos in positions]


def random_scene(
    rng: random.Random,
    max_objects: int = 3,
    rates: dict[str, float] | None = None,
    allowed: Callable[[Thing, Background], bool] | None = None,
) -> Scene:
    """A scene with uniform classes, colours and backgrounds; objects failing ``allowed`` are redrawn."""
    background = Background(rng.choice(TEXTURES), rng.choice(list(BG_COLOURS)))
    things = []
    for position, size in sample_layout(rng, max_objects):
        offset = (round(rng.uniform(-JITTER, JITTER), 4), round(rng.uniform(-JITTER, JITTER), 4))
        while True:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            thing = Thing(shape, colour, size, position, sample_appearance(rng, shape, colour, rates), offset)
            if allowed is None or allowed(thing, background):
                break
        things.append(thing)
    return Scene(tuple(things), background)


def in_training(thing: Thing, background: Background) -> bool:
    """Base training excludes every subject's exact look and every held-out combination."""
    return thing.instance not in _SUBJECT_INSTANCES and not heldout(thing.shape, thing.colour, background.texture)


def sample_scene(rng: random.Random, max_objects: int = 3) -> Scene:
    """A scene from the base-training distribution."""
    return random_scene(rng, max_objects, allowed=in_training)


def sample_caption(rng: random.Random, max_objects: int = 3) -> tuple[Scene, str]:
    """A base-training pair: the scene shows everything the caption says; omitted attributes are random."""
    scene = sample_scene(rng, max_objects)
    return scene, caption(scene, rng)


def heldout_scenes(n: int, seed: int = 0, max_objects: int = 3) -> list[Scene]:
    """``n`` scenes in which every object is a held-out (shape, colour, texture) combination."""
    rng = random.Random(f"heldout-{seed}")

    def allowed(thing: Thing, background: Background) -> bool:
        return thing.instance not in _SUBJECT_INSTANCES and heldout(thing.shape, thing.colour, background.texture)

    return [random_scene(rng, max_objects, allowed=allowed) for _ in range(n)]


def reference_scenes(subject: Subject, n: int = 5, seed: int = 0) -> list[Scene]:
    """A user's "photos" of the subject: alone, mostly large, at distinct (slot, size, background) settings."""
    rng = random.Random(f"reference-{subject.name}-{seed}")
    scenes, seen = [], set()
    while len(scenes) < n:
        size = "small" if len(scenes) % REFERENCE_SMALL_EVERY == REFERENCE_SMALL_EVERY - 1 else "large"
        position = rng.choice(SLOTS)
        background = Background(rng.choice(TEXTURES), rng.choice(list(BG_COLOURS)))
        offset = (round(rng.uniform(-JITTER, JITTER), 4), round(rng.uniform(-JITTER, JITTER), 4))
        if (size, position, background) in seen:
            continue
        seen.add((size, position, background))
        scenes.append(Scene((subject.thing(size, position, offset),), background))
    return scenes


def reference_images(subject: Subject, n: int = 5, seed: int = 0, size: int = 32) -> list[Image.Image]:
    """Renders of `reference_scenes`."""
    return [render(scene, size) for scene in reference_scenes(subject, n, seed)]


def realize(required: dict | str, rng: random.Random, tokens: dict[str, Subject] | None = None) -> Scene:
    """A scene showing exactly what ``required`` asks for, everything else random: the oracle image of a prompt.

    ``tokens`` maps placeholders to the subjects they stand for. Raises ``ValueError`` when the
    request cannot be drawn (an unknown placeholder, a layout that would overlap).
    """
    wanted = parse_caption(required) if isinstance(required, str) else required
    objects = wanted["objects"]
    fixed = [o["position"] for o in objects if o["position"] is not None]
    for _ in range(100):
        free = iter(rng.sample([p for p in SLOTS if p not in fixed], len(objects) - len(fixed)))
        positions = [o["position"] or next(free) for o in objects]
        roomy = len(objects) == 1 or relation_of(positions) is not None  # where large objects fit
        sizes = [o["size"] or (rng.choice(SIZES) if roomy else "small") for o in objects]
        if layout_ok(positions, sizes):
            break
    else:
        raise ValueError(f"no valid layout for {wanted}")
    background = Background(wanted["texture"] or rng.choice(TEXTURES), wanted["background"] or rng.choice(list(BG_COLOURS)))
    things = []
    for obj, position, size in zip(objects, positions, sizes):
        offset = (round(rng.uniform(-JITTER, JITTER), 4), round(rng.uniform(-JITTER, JITTER), 4))
        if obj["token"] is not None:
            if obj["token"] not in (tokens or {}):
                raise ValueError(f"no subject given for {obj['token']}")
            subject = tokens[obj["token"]]
            if obj["colour"] not in (None, subject.colour):
                raise ValueError(f"{obj['token']} is {subject.colour}, not {obj['colour']}")
            things.append(subject.thing(size, position, offset))
            continue
        while True:
            shape, colour = obj["shape"], obj["colour"] or rng.choice(list(COLOURS))
            thing = Thing(shape, colour, size, position, sample_appearance(rng, shape, colour), offset)
            if thing.instance not in _SUBJECT_INSTANCES:
                break
        things.append(thing)
    return Scene(tuple(things), background)


def compositional_prompts(subject_token: str, class_word: str, n: int, seed: int = 0) -> list[tuple[str, dict]]:
    """``n`` distinct benchmark prompts: the subject's token plus 1-3 requested extras.

    Extras are a position, a background (texture and colour), and/or other objects (never of the
    subject's class, so a judge cannot mistake them for the subject). Every prompt describes a
    valid layout. Returns (prompt, required spec) pairs; the spec is ``parse_caption(prompt)``.
    """
    if not TOKEN_PATTERN.fullmatch(subject_token):
        raise ValueError(f"subject token must look like <name>, got {subject_token!r}")
    rng = random.Random(f"prompts-{subject_token}-{class_word}-{seed}")
    kinds = [(kind,) for kind in ("place", "background", "relation", "pair", "triple")]
    kinds += [(kind, "background") for kind in ("place", "relation", "pair", "triple")]
    prompts: dict[str, dict] = {}
    for _ in range(200 * n):
        if len(prompts) == n:
            break
        text = write(_prompt_spec(rng, subject_token, class_word, rng.choice(kinds)))
        prompts.setdefault(text, parse_caption(text))
    if len(prompts) < n:
        raise ValueError(f"only {len(prompts)} distinct prompts exist, {n} requested")
    return list(prompts.items())


def _prompt_spec(rng: random.Random, token: str, class_word: str, kind: tuple[str, ...]) -> dict:
    def other(position: str | None) -> dict:
        shape = rng.choice([s for s in SHAPES if s != class_word])
        return {"shape": shape, "token": None, "colour": rng.choice(list(COLOURS)), "size": None, "position": position}

    me = {"shape": None, "token": token, "colour": None, "size": None, "position": None}
    s = {"objects": [me], "texture": None, "background": None, "relation": None}
    if "place" in kind:
        me["position"] = rng.choice(SLOTS)
    if "relation" in kind:
        s["relation"] = rng.choice(list(RELATIONS))
        s["objects"] = [me, other(None)] if rng.random() < 0.5 else [other(None), me]
        for obj, position in zip(s["objects"], RELATIONS[s["relation"]]):
            obj["position"] = position
    if kind[0] in ("pair", "triple"):
        positions = rng.sample(SLOTS, 2 if kind[0] == "pair" else 3)
        me["position"] = positions[0]
        s["objects"] = [me, *(other(p) for p in positions[1:])]
        rng.shuffle(s["objects"])
    if "background" in kind:
        s["texture"], s["background"] = rng.choice(TEXTURES), rng.choice(list(BG_COLOURS))
    return s
