"""Organ names to BTCV codes: ``"kidney_left"``, ``"Left Kidney"``, ``"adrenal gland (L)"`` ...

Datasets name their labels in their own words (the ``labels`` of an nnU-Net ``dataset.json``,
for one: :mod:`agcl.data.nnunet`); :func:`btcv_code_of` matches such a name to one of the 13 BTCV
organ codes, ignoring case, punctuation and word order and knowing the common synonyms.
"""

from __future__ import annotations

import re

__all__ = ["btcv_code_of"]

# word sets (after normalisation) -> BTCV code, for organs without a side
_UNSIDED: dict[frozenset[str], int] = {
    frozenset(words.split()): code
    for code, names in (
        (1, ("spleen",)),
        (4, ("gallbladder", "gall bladder")),
        (5, ("esophagus", "oesophagus")),
        (6, ("liver",)),
        (7, ("stomach",)),
        (8, ("aorta", "abdominal aorta", "arota")),  # "arota": AMOS 2022's spelling
        (9, ("inferior vena cava", "ivc", "postcava")),
        (
            10,
            ("portal splenic vein",),
        ),  # "portal vein and splenic vein", "portal and splenic veins"
        (11, ("pancreas",)),
    )
    for words in names
}
# word sets -> (right code, left code), for paired organs
_SIDED: dict[frozenset[str], tuple[int, int]] = {
    frozenset(words.split()): codes
    for codes, names in (
        ((2, 3), ("kidney",)),
        ((12, 13), ("adrenal gland", "adrenal", "suprarenal gland", "suprarenal")),
    )
    for words in names
}
_SIDES = {"right": "right", "r": "right", "rt": "right", "left": "left", "l": "left", "lt": "left"}
_FILLER = {"and", "the", "of"}
_PLURALS = {"veins": "vein", "glands": "gland"}


def btcv_code_of(name: str) -> int | None:
    """The BTCV organ code of a label name, or ``None`` when it names no BTCV organ.

    Matching ignores case, punctuation (``_``, ``-``, ``/``, brackets) and word order, so
    ``"adrenal_gland_left"``, ``"Left adrenal gland"`` and ``"adrenal gland (L)"`` are all organ
    13; sides may be written ``left``/``l``/``lt`` and ``right``/``r``/``rt``. Synonyms:
    ``gall bladder``, ``oesophagus``, ``abdominal aorta`` (and AMOS's ``arota``), ``ivc`` and
    ``postcava`` for the inferior vena cava, ``portal vein and splenic vein`` in any wording,
    ``adrenal`` and ``suprarenal gland``. A paired organ without a side (``"kidney"``) or a
    structure that is no BTCV organ (``"duodenum"``, ``"liver tumor"``) gives ``None``.

    Examples:
        >>> names = ("kidney_left", "Right Kidney", "portal_vein_and_splenic_vein")
        >>> [btcv_code_of(n) for n in names]
        [3, 2, 10]
        >>> btcv_code_of("postcava"), btcv_code_of("kidney"), btcv_code_of("duodenum")
        (9, None, None)
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a label name string; got {type(name).__name__} {name!r}")
    words = [_PLURALS.get(w, w) for w in re.split(r"[^0-9a-z]+", name.lower()) if w]
    sides = {_SIDES[w] for w in words if w in _SIDES}
    key = frozenset(w for w in words if w not in _SIDES and w not in _FILLER)
    if len(sides) > 1:
        return None
    if not sides:
        return _UNSIDED.get(key)
    pair = _SIDED.get(key)
    if pair is None:
        return None
    return pair[0] if sides == {"right"} else pair[1]
