"""Captions: scene -> text, text -> the attributes it asks for, and how well a scene satisfies them.

A *spec* is the plain-dict form of what a caption requests::

    {"objects": [{"shape": "star", "token": None, "colour": "red", "size": None, "position": "left"}, ...],
     "texture": "striped", "background": "teal", "relation": None}

``None`` means "not requested" (free). An object named by a placeholder (``<my-star>``) has
``shape=None`` and ``token="<my-star>"``: its identity is the judge's subject similarity, not a
word. ``relation`` ("next to" / "above") only records the phrasing; it already set the positions
(the first-named object takes the first slot of the pair: left, or top).

Grammar (every caption the world writes parses back exactly)::

    caption    := objects [" on " bg] | bg " with " objects
    objects    := object [place] (" and " object [place])* | object " next to " object | object " above " object
    object     := ("a" | "an") [size] [colour] (shape | <token>)
    place      := "on the left" | "on the right" | "at the top" | "at the bottom" | "in the center"
    bg         := ("a" | "an") [texture] [background colour] "background"
"""

from __future__ import annotations

import itertools
import random
import re

from dti.mini.scene import BG_COLOURS, COLOURS, RELATIONS, SHAPES, SIZES, TEXTURES, Scene, relation_of

PLACES = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom", "center": "in the center"}
DROP = 0.3  # default chance that a sampled caption omits each optional attribute
RELATION_RATE = 0.5  # chance that a relation pair is phrased with its relation word
BG_FIRST_RATE = 0.25  # chance of the "a ... background with ..." phrasing
OBJECT_KEYS = ("shape", "token", "colour", "size", "position")
ATTRIBUTES = ("shape", "colour", "size")  # the per-object attributes a caption can request
OBJECT_ATOMS = (*ATTRIBUTES, "position")  # what fidelity checks on each requested object besides presence
TOKEN_PATTERN = re.compile(r"<[^<>\s]+>")


def vocabulary() -> list[str]:
    """Every word a caption or benchmark prompt can contain (placeholders excepted), sorted."""
    words = {"a", "an", "and", "with", "background", "on", "next", "to", "above"}
    words.update(SHAPES, COLOURS, SIZES, TEXTURES, BG_COLOURS)
    for phrase in PLACES.values():
        words.update(phrase.split())
    return sorted(words)


def spec(source: Scene | str) -> dict:
    """The attributes a caption requests, or every attribute of a scene (its full caption's spec)."""
    if isinstance(source, str):
        return parse_caption(source)
    return {
        "objects": [_object(t.shape, None, t.colour, t.size, t.position) for t in source.things],
        "texture": source.background.texture,
        "background": source.background.colour,
        "relation": None,
    }


def caption(scene: Scene, rng: random.Random | None = None, drop: float | None = None) -> str:
    """Describe ``scene``. Without ``rng``: the canonical full caption. With ``rng``: a random phrasing
    in which each optional attribute (size, colour, position, texture, background colour) is left out
    with probability ``drop`` (default ``DROP``); left-out attributes are whatever the scene has."""
    s = spec(scene)
    pair = relation_of([o["position"] for o in s["objects"]])
    if rng is None:
        if drop:
            raise ValueError("dropping attributes needs an rng")
        s["relation"] = pair
        return write(_order_for_relation(s))
    drop = DROP if drop is None else drop
    if pair is not None and rng.random() < RELATION_RATE:
        s["relation"] = pair
        _order_for_relation(s)
    else:
        rng.shuffle(s["objects"])
    droppable = ("size", "colour") if s["relation"] else ("size", "colour", "position")  # a relation implies positions
    for obj in s["objects"]:
        for key in droppable:
            if rng.random() < drop:
                obj[key] = None
    for key in ("texture", "background"):
        if rng.random() < drop:
            s[key] = None
    return write(s, bg_first=rng.random() < BG_FIRST_RATE)


def write(s: dict, bg_first: bool = False) -> str:
    """Spec -> caption text (the inverse of `parse_caption`)."""
    phrases = [_object_phrase(o) for o in s["objects"]]
    if s.get("relation"):
        body = f" {s['relation']} ".join(phrases)
    else:
        body = " and ".join(p + (f" {PLACES[o['position']]}" if o["position"] else "") for p, o in zip(phrases, s["objects"]))
    words = [w for w in (s["texture"], s["background"]) if w]
    if not words:
        return body
    bg = f"{_article(words[0])} {' '.join(words)} background"
    return f"{bg} with {body}" if bg_first else f"{body} on {bg}"


def parse_caption(text: str) -> dict:
    """Caption or prompt -> spec. Raises ``ValueError`` on anything outside the grammar."""
    return _Parser(text).parse()


OUTCOMES = ("present", *OBJECT_ATOMS, "texture", "background", "count")  # the atom kinds, in report order


def outcomes(required: dict, observed: Scene | dict) -> dict[str, list[bool]]:
    """Per atom kind, whether ``observed`` satisfies each atomic requirement of ``required``.

    ``observed`` is a scene or a full spec of what an image shows (every object with its position,
    as `spec` of a scene or the judge's prediction). Atoms: each requested object's presence and
    each of its requested shape / colour / size / position; the texture and background colour if
    requested; and the object count. Requested objects are bound to observed ones by the best
    assignment (`assign`), so a red star drawn in the wrong place still counts as a red star, and
    misses only its position. Placeholder objects have no shape atom.
    """
    seen = spec(observed) if isinstance(observed, Scene) else observed
    out: dict[str, list[bool]] = {k: [] for k in OUTCOMES}
    for obj, found in zip(required["objects"], assign(required["objects"], seen["objects"])):
        out["present"].append(found is not None)
        for key in OBJECT_ATOMS:
            if obj[key] is not None:
                out[key].append(found is not None and found[key] == obj[key])
    for key in ("texture", "background"):
        if required[key] is not None:
            out[key].append(seen[key] == required[key])
    out["count"].append(len(seen["objects"]) == len(required["objects"]))
    return out


def fidelity(required: dict, observed: Scene | dict) -> float:
    """Fraction of the atomic requirements of ``required`` (see `outcomes`) that ``observed``
    satisfies. A scene satisfies its own spec with 1.0."""
    atoms = [ok for values in outcomes(required, observed).values() for ok in values]
    return sum(atoms) / len(atoms)


def assign(wanted: list[dict], seen: list[dict]) -> list[dict | None]:
    """For each requested object, the distinct observed object (or None) that together satisfy the
    most atoms; ties go to the first assignment in slot order, so the result is deterministic."""
    choices = itertools.permutations([*seen, *[None] * len(wanted)], len(wanted))
    return list(max(choices, key=lambda chosen: sum(_matches(o, t) for o, t in zip(wanted, chosen))))


def _matches(wanted: dict, seen: dict | None) -> int:
    """Atoms of one requested object that an observed object (None: missing) satisfies."""
    if seen is None:
        return 0
    return 1 + sum(wanted[k] is not None and wanted[k] == seen[k] for k in OBJECT_ATOMS)


def _object(shape, token, colour, size, position) -> dict:
    return dict(zip(OBJECT_KEYS, (shape, token, colour, size, position)))


def _order_for_relation(s: dict) -> dict:
    """Put a relation pair's objects in relation order (left before right, top before bottom)."""
    if s["relation"]:
        first = RELATIONS[s["relation"]][0]
        s["objects"].sort(key=lambda o: o["position"] != first)
    return s


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_phrase(o: dict) -> str:
    words = [w for w in (o["size"], o["colour"], o["token"] or o["shape"]) if w]
    return f"{_article(words[0])} {' '.join(words)}"


class _Parser:
    """Recursive descent over the grammar in the module docstring."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.words = text.split()
        self.i = 0

    def parse(self) -> dict:
        s = {"objects": [], "texture": None, "background": None, "relation": None}
        if "background" in self.words and self.words.index("background") + 1 < len(self.words):
            if self.words[self.words.index("background") + 1] == "with":
                self._background(s)
                self._expect("with")
        self._objects(s)
        if self._peek() == "on":
            self._expect("on")
            self._background(s)
        if self.i != len(self.words):
            self._fail("unexpected words")
        return s

    def _objects(self, s: dict) -> None:
        s["objects"].append(self._object())
        if self._peek() in ("next", "above"):
            word = "next to" if self._peek() == "next" else "above"
            self._take(word.split())
            s["objects"].append(self._object())
            s["relation"] = word
            for obj, pos in zip(s["objects"], RELATIONS[word]):
                obj["position"] = pos
            return
        s["objects"][-1]["position"] = self._place()
        while self._peek() == "and":
            self._expect("and")
            s["objects"].append(self._object())
            s["objects"][-1]["position"] = self._place()

    def _object(self) -> dict:
        self._article()
        size = self._optional(SIZES)
        colour = self._optional(COLOURS)
        word = self._peek()
        if word in SHAPES:
            self.i += 1
            return _object(word, None, colour, size, None)
        if word is not None and TOKEN_PATTERN.fullmatch(word):
            self.i += 1
            return _object(None, word, colour, size, None)
        return self._fail("expected a shape word or a <placeholder>")

    def _place(self) -> str | None:
        for slot, phrase in PLACES.items():
            if self.words[self.i : self.i + 3] == phrase.split():
                self.i += 3
                return slot
        return None

    def _background(self, s: dict) -> None:
        self._article()
        s["texture"] = self._optional(TEXTURES)
        s["background"] = self._optional(BG_COLOURS)
        self._expect("background")

    def _article(self) -> None:
        if self._peek() not in ("a", "an"):
            self._fail("expected 'a' or 'an'")
        self.i += 1

    def _optional(self, words) -> str | None:
        word = self._peek()
        if word in words:
            self.i += 1
            return word
        return None

    def _peek(self) -> str | None:
        return self.words[self.i] if self.i < len(self.words) else None

    def _expect(self, word: str) -> None:
        if self._peek() != word:
            self._fail(f"expected {word!r}")
        self.i += 1

    def _take(self, words: list[str]) -> None:
        for word in words:
            self._expect(word)

    def _fail(self, why: str):
        raise ValueError(f"cannot parse caption {self.text!r} at word {self.i} ({self._peek()!r}): {why}")
