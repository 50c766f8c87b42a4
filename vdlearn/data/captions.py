"""The caption grammar of the toy world, in one place.

Every clip is described by four attributes, and its caption is generated from them::

    video:  a <colour> <object> moving <direction> <speed>     "a red 3 moving left quickly"
    image:  a <colour> <object>                                 "a blue star"

Vocabulary (the whole language; no tokenizer is needed):

=========  ==============================================================
object     0 1 2 3 4 5 6 7 8 9  circle square triangle cross   star (images only)
colour     red green blue yellow cyan magenta white orange
direction  left right up down
speed      slowly quickly
filler     a an the moving moves going goes
synonyms   slow -> slowly, fast/quick -> quickly,
           zero ... nine -> 0 ... 9, plus -> cross
=========  ==============================================================

:func:`parse_caption` reads a caption back into attributes; any word outside the
vocabulary is an error that names the vocabulary, so a typo in a prompt never turns
silently into a different video. Taught in notebook 01_toy_video_world.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGITS = tuple(str(d) for d in range(10))
VIDEO_OBJECTS = DIGITS + ("circle", "square", "triangle", "cross")
IMAGE_ONLY_OBJECTS = ("star",)
OBJECTS = VIDEO_OBJECTS + IMAGE_ONLY_OBJECTS
COLOURS = ("red", "green", "blue", "yellow", "cyan", "magenta", "white", "orange")
DIRECTIONS = ("left", "right", "up", "down")
SPEEDS = ("slowly", "quickly")
FILLERS = ("a", "an", "the", "moving", "moves", "going", "goes")
SYNONYMS = {
    "slow": "slowly",
    "fast": "quickly",
    "quick": "quickly",
    "plus": "cross",
    **{w: str(i) for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])},
}

ATTRIBUTES = ("object", "colour", "direction", "speed")
VALUES = {"object": OBJECTS, "colour": COLOURS, "direction": DIRECTIONS, "speed": SPEEDS}


class UnknownWordError(ValueError):
    """A caption used a word outside the toy world's vocabulary."""


@dataclass(frozen=True)
class Caption:
    """The attributes a caption asks for; ``direction``/``speed`` are ``None`` for images."""

    object: str
    colour: str
    direction: str | None = None
    speed: str | None = None

    def text(self) -> str:
        """The canonical caption, e.g. ``"a red 3 moving left quickly"``."""
        words = ["an" if self.colour[0] in "aeiou" else "a", self.colour, self.object]
        if self.direction is not None:
            words += ["moving", self.direction]
        if self.speed is not None:
            words.append(self.speed)
        return " ".join(words)

    def asdict(self) -> dict:
        return {"object": self.object, "colour": self.colour, "direction": self.direction, "speed": self.speed}


def vocabulary() -> list[str]:
    """Every word a caption may use (canonical words, fillers and synonyms)."""
    return list(OBJECTS + COLOURS + DIRECTIONS + SPEEDS + FILLERS) + sorted(SYNONYMS)


def canonical_words() -> list[str]:
    """The words that carry meaning, each once: what a toy text encoder needs."""
    return list(OBJECTS + COLOURS + DIRECTIONS + SPEEDS)


def parse_caption(text: str) -> Caption:
    """Read a caption into its attributes.

    >>> parse_caption("a red 3 moving left quickly")
    Caption(object='3', colour='red', direction='left', speed='quickly')
    >>> parse_caption("The blue star")
    Caption(object='star', colour='blue', direction=None, speed=None)
    """
    found: dict[str, str] = {}
    words = text.lower().replace(",", " ").replace(".", " ").split()
    if not words:
        raise ValueError("Empty caption. Try something like 'a red 3 moving left quickly'.")
    for word in words:
        word = SYNONYMS.get(word, word)
        if word in FILLERS:
            continue
        kind = next((k for k, vals in VALUES.items() if word in vals), None)
        if kind is None:
            raise UnknownWordError(
                f"Unknown word {word!r} in caption {text!r}. The toy world's vocabulary is: "
                f"objects {' '.join(OBJECTS)}; colours {' '.join(COLOURS)}; directions "
                f"{' '.join(DIRECTIONS)}; speeds {' '.join(SPEEDS)}; fillers {' '.join(FILLERS)}; "
                f"synonyms {', '.join(f'{k}->{v}' for k, v in SYNONYMS.items())}."
            )
        if kind in found and found[kind] != word:
            raise ValueError(f"Caption {text!r} names two {kind}s ({found[kind]!r} and {word!r}); give one.")
        found[kind] = word
    for needed in ("object", "colour"):
        if needed not in found:
            raise ValueError(
                f"Caption {text!r} has no {needed}. Every caption names a colour and an object, "
                f"e.g. 'a red 3' or 'a red 3 moving left quickly'."
            )
    if "speed" in found and "direction" not in found:
        raise ValueError(f"Caption {text!r} gives a speed but no direction (left, right, up or down).")
    return Caption(found["object"], found["colour"], found.get("direction"), found.get("speed"))
