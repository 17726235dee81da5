"""The world's closed vocabulary, its scene dataclasses and the geometry of its five slots.

Everything here is pure data: which words exist, which colours they mean, where each slot sits
on the canvas, and which layouts are allowed. Every other module (rendering, captions, sampling,
the judge) reads these tables, so a word or a colour is defined exactly once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SHAPES = ("circle", "square", "triangle", "star", "heart", "ring", "cross", "diamond")
SIZES = ("small", "large")
SLOTS = ("left", "right", "top", "bottom", "center")
TEXTURES = ("plain", "striped", "dotted", "checkered", "gradient")
MARKS = ("none", "dot", "bar", "hole")
NO_HOLE = ("circle", "ring")  # a holed circle is a ring; a ring's centre is already empty

# Object and background palettes are disjoint and far apart in RGB, so a colour word never
# names both an object and a background, and a judge never has to tell them apart by a shade.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (255, 140, 0),
    "yellow": (250, 215, 40),
    "green": (40, 170, 70),
    "blue": (40, 90, 230),
    "purple": (140, 60, 190),
    "pink": (255, 130, 190),
    "white": (245, 245, 245),
}
BG_COLOURS: dict[str, tuple[int, int, int]] = {
    "gray": (128, 128, 128),
    "black": (10, 10, 10),
    "brown": (115, 75, 40),
    "teal": (0, 120, 120),
    "navy": (20, 30, 120),
}
# The second colour of textured backgrounds: a lighter shade of the same hue, chosen so that every
# mix of a background colour with its accent is still nearer to it than to any other palette colour.
BG_ACCENTS: dict[str, tuple[int, int, int]] = {
    "gray": (165, 165, 165),
    "black": (40, 40, 40),
    "brown": (150, 100, 55),
    "teal": (20, 155, 155),
    "navy": (40, 55, 160),
}

# A two-object relation names a slot pair: the first-named object takes the first slot.
RELATIONS: dict[str, tuple[str, str]] = {"next to": ("left", "right"), "above": ("top", "bottom")}

# Geometry in canvas fractions (resolution independent). EXTENT is the side of an object's
# bounding box; an outline reaches a further 2/3 of OUTLINE outside it. A slot's centre
# depends on the object's size so that a large object still fits inside the canvas and a small one
# leaves room for neighbours: any two small slots, and the two slots of a relation pair at any
# sizes, never overlap and stay inside the canvas, even with the largest jitter and an outline.
EXTENT = {"small": 0.26, "large": 0.42}
JITTER = 0.01
# Outline width: one pixel at 32 px whatever the object's size, a third inside the shape's border
# and two thirds outside, so that even a small object keeps most of its main colour.
OUTLINE = 1 / 32
CENTRES = {
    "small": {"left": (0.17, 0.5), "right": (0.83, 0.5), "top": (0.5, 0.17), "bottom": (0.5, 0.83), "center": (0.5, 0.5)},
    "large": {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "center": (0.5, 0.5)},
}


@dataclass(frozen=True)
class Appearance:
    """What makes one object an instance rather than a class: never named by any caption.

    ``mark`` is drawn at the shape's centre (a white dot or bar, ink on white objects; a hole
    shows the background through), ``tone`` paints the right 40% of the shape in a second colour,
    ``outline`` draws the border in a colour.
    """

    mark: str = "none"
    tone: str | None = None
    outline: str | None = None

    def __post_init__(self) -> None:
        if self.mark not in MARKS:
            raise ValueError(f"unknown mark {self.mark!r}; expected one of {MARKS}")
        for name in (self.tone, self.outline):
            if name is not None and name not in COLOURS:
                raise ValueError(f"unknown colour {name!r}")

    @property
    def plain(self) -> bool:
        return self == Appearance()


@dataclass(frozen=True)
class Thing:
    """One object: class (``shape``), main ``colour``, ``size``, slot ``position`` and instance ``appearance``.

    ``offset`` is a small sub-slot jitter (canvas fractions, at most ``JITTER`` per axis) so that
    renders of equal captions are not pixel-identical.
    """

    shape: str
    colour: str
    size: str
    position: str
    appearance: Appearance = field(default_factory=Appearance)
    offset: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        _check(self.shape, SHAPES, "shape")
        _check(self.colour, COLOURS, "colour")
        _check(self.size, SIZES, "size")
        _check(self.position, SLOTS, "position")
        app = self.appearance
        if self.colour in (app.tone, app.outline):
            raise ValueError(f"appearance colours must differ from the main colour {self.colour!r}")
        if self.shape in NO_HOLE and app.mark == "hole":
            raise ValueError(f"a {self.shape} with a hole would look like another class (a ring)")
        if max(abs(self.offset[0]), abs(self.offset[1])) > JITTER + 1e-9:
            raise ValueError(f"offset {self.offset} exceeds the jitter bound {JITTER}")

    @property
    def instance(self) -> tuple[str, str, Appearance]:
        """The identity a subject is defined by: class, main colour and appearance."""
        return (self.shape, self.colour, self.appearance)


@dataclass(frozen=True)
class Background:
    texture: str
    colour: str

    def __post_init__(self) -> None:
        _check(self.texture, TEXTURES, "texture")
        _check(self.colour, BG_COLOURS, "background colour")


@dataclass(frozen=True)
class Scene:
    """1-3 things in distinct slots (stored in slot order, so equal scenes compare equal) on a background."""

    things: tuple[Thing, ...]
    background: Background

    def __post_init__(self) -> None:
        things = tuple(sorted(self.things, key=lambda t: SLOTS.index(t.position)))
        object.__setattr__(self, "things", things)
        if not layout_ok([t.position for t in things], [t.size for t in things]):
            raise ValueError(f"invalid layout: {[(t.position, t.size) for t in things]}")


@dataclass(frozen=True)
class Subject:
    """A named instance for personalization benchmarks; its exact look never appears in base training."""

    name: str
    shape: str
    colour: str
    appearance: Appearance
    split: str

    def __post_init__(self) -> None:
        Thing(self.shape, self.colour, "large", "center", self.appearance)  # validates the combination
        _check(self.split, ("dev", "eval"), "split")

    @property
    def instance(self) -> tuple[str, str, Appearance]:
        return (self.shape, self.colour, self.appearance)

    def thing(self, size: str, position: str, offset: tuple[float, float] = (0.0, 0.0)) -> Thing:
        return Thing(self.shape, self.colour, size, position, self.appearance, offset)


def relation_of(positions: list[str] | tuple[str, ...]) -> str | None:
    """The relation word whose slot pair is exactly ``positions`` (either order), if any."""
    for word, pair in RELATIONS.items():
        if sorted(positions) == sorted(pair):
            return word
    return None


def layout_ok(positions: list[str], sizes: list[str]) -> bool:
    """1-3 distinct slots; large objects only alone or in a relation pair (elsewhere they would overlap)."""
    if not 1 <= len(positions) <= 3 or len(set(positions)) != len(positions):
        return False
    return len(positions) == 1 or relation_of(positions) is not None or all(s == "small" for s in sizes)


def _check(value: str, allowed, what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(allowed)}")
