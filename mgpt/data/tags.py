"""Entity tag schemes: validate a tag, detect a source's scheme (IOB1, IOB2, BIOES), convert to IOB2.

IOB2 is the scheme the metrics (seqeval, strict mode) expect; every tag source (CoNLL files, TFDS
sequence features) is brought to it as a whole, since the scheme is a property of the source.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger("mgpt")

_TAG = re.compile(r"^([BIES])-(\S+)$")

SCHEMES = ("IOB1", "IOB2", "BIOES")


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``; anything else raises ValueError."""
    if tag == "O":
        return "O", ""
    match = _TAG.match(tag)
    if match is None:
        raise ValueError(f"invalid tag {tag!r}: expected 'O' or B-/I-/E-/S- followed by an entity type")
    return match.group(1), match.group(2)


def _continues(previous: str, kind: str) -> bool:
    """Whether a tag after ``previous`` may continue an entity of type ``kind``."""
    prefix, prev_kind = split_tag(previous) if previous else ("O", "")
    return prev_kind == kind and prefix in ("B", "I")


def detect_scheme(tag_sequences: list[list[str]]) -> str:
    """Guess a file's scheme: BIOES if any S-/E- tag, IOB1 if an I- tag starts an entity, else IOB2."""
    starts_with_inside = False
    for tags in tag_sequences:
        previous = ""
        for tag in tags:
            prefix, kind = split_tag(tag)
            if prefix in ("S", "E"):
                return "BIOES"
            if prefix == "I" and not _continues(previous, kind):
                starts_with_inside = True
            previous = tag
    return "IOB1" if starts_with_inside else "IOB2"


def to_iob2(tags: list[str], scheme: str) -> list[str]:
    """Convert one sentence's tags to IOB2.

    IOB1: an I-X that starts an entity becomes B-X. BIOES: S-X -> B-X, E-X -> I-X (an I-/E- that
    does not continue an entity of its type starts a new one, so the result is always valid IOB2).
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}: expected one of {SCHEMES}")
    out = []
    previous = ""  # the previous tag in the *input* scheme
    for tag in tags:
        prefix, kind = split_tag(tag)
        if prefix == "O":
            out.append("O")
        elif prefix in ("B", "S"):
            out.append(f"B-{kind}")
        else:  # I or E: inside, unless nothing of this type is open
            open_entity = _continues(previous, kind)
            out.append(f"I-{kind}" if open_entity else f"B-{kind}")
        previous = tag
    return out


def normalise_tags(sentences: list[dict], source: str) -> list[dict]:
    """Detect the tag scheme of ``sentences`` (dicts with optional ``"tags"``) and convert them,
    in place, to IOB2; ``source`` names where they came from in the log."""
    tagged = [s for s in sentences if "tags" in s]
    scheme = detect_scheme([s["tags"] for s in tagged])
    if scheme != "IOB2":
        logger.info("%s: converting %s tags to IOB2", source, scheme)
    for sentence in tagged:
        sentence["tags"] = to_iob2(sentence["tags"], scheme)
    return sentences
