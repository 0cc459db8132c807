"""The number-preservation check: a rewrite must still contain every number the original states.

A rephrasing that drops or changes a given quantity changes the answer, and then the cross-view pseudo-label
of Co-rewarding-I rewards the wrong thing. The check is deliberately simple and transparent:

* Every **digit literal** of the original (``3``, ``0.25``, ``1,000``, the ``2`` of ``x^2``, the ``1`` and
  ``2`` of ``\\frac12``) must appear in the rewrite with the same numeric value. Values are compared as
  decimals, so ``1,000`` = ``1000`` = ``1{,}000`` = ``1\\,000`` and ``0.50`` = ``.5``. Signs are ignored
  (``-2`` and "negative two" both keep the 2). A comma-grouped literal such as ``1,234`` may also be a list
  (the point ``(1,234)``), so either reading satisfies it: the value 1234, or both 1 and 234.
* The rewrite may spell numbers out: cardinals (``two``, ``twenty-five``, ``two hundred and five``),
  ordinals (``third``, ``thirds`` — so "one-third" keeps the 1 and the 3 of ``1/3``), and a few words
  that name one number in math text (``once`` 1, ``twice``/``double`` 2, ``thrice``/``triple`` 3,
  ``half`` 2 or 0.5, ``quarter`` 4 or 0.25, ``dozen`` 12, ``squared``/``square`` 2,
  ``cubed``/``cube``/``cubic`` 3, and the bases ``binary`` 2, ``octal`` 8, ``decimal`` 10, ``hexadecimal`` 16).
* In figures (``[asy]…[/asy]``) only the printed strings count (``label("21", (0.5,0.8))`` requires 21): the
  coordinates draw the picture, and rewrites leave the drawing out.
  ``\\frac12`` and ``\\log_432`` are read as ``\\frac{1}{2}`` and ``\\log_{4} 32``.
* Numbers the original spells out are not required (only digit literals are), and the rewrite may add
  numbers of its own.

Known blind spots (by design, to stay predictable): a value re-expressed in another form (``50%`` → 0.5,
``1000`` → ``10^3``) counts as lost; a number that survives but is attached to a different quantity is not
detected. Measured on the published Qwen3-32B rewrites (``train_rewrite_Qwen3-32B.parquet``) the rule accepts
91.3% of MATH, 87.7% of DAPO-14k and 89.8% of OpenRS; the rejections are mostly legitimate rewordings
(``90^\\circ`` → "right angle", a listed sum summarised) and some real changes of a quantity (three friends
become five roommates, changing the answer) — a rejected reply costs a retry, an accepted wrong one
corrupts a pseudo-label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# Asymptote figures: their coordinates draw the picture and are not quantities of the question (rewrites,
# including the published ones, leave the figure out), but the strings they print are the question's data
_ASY_RE = re.compile(r"\[asy\].*?(?:\[/asy\]|\Z)", re.DOTALL)
_ASY_STRING_RE = re.compile(r'"([^"\n]*)"')
# \frac12 means \frac{1}{2}; without this the literal would read as twelve
_FRAC_SHORT_RE = re.compile(r"\\[dt]?frac\s*(\d)\s*(\d)")
# \log_432 means log base 4 of 32
_LOG_SHORT_RE = re.compile(r"\\log\s*_\s*(\d)(\d+)")
# LaTeX thousands separators: 1{,}000 and 1\,000 (thin space) both mean 1,000
_LATEX_GROUP_RE = re.compile(r"(?<=\d)(?:\{,\}|\\,|\\!|\\ |\u2009|\u202f)(?=\d{3}(?!\d))")
_LITERAL_RE = re.compile(r"(?<![\d.])(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+|\.\d+|\d+)")
_WORD_RE = re.compile(r"[a-z]+")

_UNIT_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)  # fmt: skip
_TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_UNITS = {w: i for i, w in enumerate(_UNIT_WORDS)}
_TENS = {w: 10 * (i + 2) for i, w in enumerate(_TENS_WORDS)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_ORDINALS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14,
    "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
    "twentieth": 20, "thirtieth": 30, "fortieth": 40, "fiftieth": 50, "sixtieth": 60, "seventieth": 70,
    "eightieth": 80, "ninetieth": 90, "hundredth": 100, "thousandth": 1000, "millionth": 10**6,
}  # fmt: skip
_SPECIAL: dict[str, tuple[Decimal, ...]] = {
    "once": (Decimal(1),),
    "twice": (Decimal(2),), "double": (Decimal(2),), "doubled": (Decimal(2),), "doubles": (Decimal(2),),
    "thrice": (Decimal(3),), "triple": (Decimal(3),), "tripled": (Decimal(3),), "triples": (Decimal(3),),
    "quadruple": (Decimal(4),), "quadrupled": (Decimal(4),),
    "half": (Decimal(2), Decimal("0.5")), "halves": (Decimal(2), Decimal("0.5")),
    "halved": (Decimal(2), Decimal("0.5")),
    "quarter": (Decimal(4), Decimal("0.25")), "quarters": (Decimal(4), Decimal("0.25")),
    "dozen": (Decimal(12),), "dozens": (Decimal(12),),
    "square": (Decimal(2),), "squared": (Decimal(2),), "squares": (Decimal(2),),
    "binary": (Decimal(2),), "octal": (Decimal(8),), "decimal": (Decimal(10),),
    "hexadecimal": (Decimal(16),),
    "cube": (Decimal(3),), "cubed": (Decimal(3),), "cubes": (Decimal(3),), "cubic": (Decimal(3),),
}  # fmt: skip


@dataclass(frozen=True)
class NumberLiteral:
    """A digit literal of the original; satisfied when all values of any one reading are in the rewrite."""

    text: str
    readings: tuple[frozenset[Decimal], ...]


def _normalize(text: str) -> str:
    text = _ASY_RE.sub(lambda m: " " + " ".join(_ASY_STRING_RE.findall(m.group(0))) + " ", text)
    text = _FRAC_SHORT_RE.sub(r"\\frac{\1}{\2}", text)
    text = _LOG_SHORT_RE.sub(r"\\log_{\1} \2", text)
    return _LATEX_GROUP_RE.sub(",", text)


def _decimal(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation as err:  # the regex only matches digits, so this is a bug, not bad input
        raise ValueError(f"not a number literal: {text!r}") from err


def _readings(literal: str) -> tuple[frozenset[Decimal], ...]:
    if "," not in literal:
        return (frozenset({_decimal(literal)}),)
    grouped = frozenset({_decimal(literal.replace(",", ""))})
    parts = frozenset(_decimal(p) for p in literal.split(","))
    return (grouped, parts)


def number_literals(text: str) -> list[NumberLiteral]:
    """The digit literals of ``text`` in order of appearance, each with its possible readings."""
    return [NumberLiteral(m.group(0), _readings(m.group(0))) for m in _LITERAL_RE.finditer(_normalize(text))]


def _word_values(text: str) -> set[Decimal]:
    """Values of spelled-out numbers: every number word on its own and every cardinal phrase as a whole."""
    values: set[Decimal] = set()
    total = current = 0
    in_phrase = False

    def close_phrase() -> None:
        nonlocal total, current, in_phrase
        if in_phrase:
            values.add(Decimal(total + current))
        total = current = 0
        in_phrase = False

    for word in _WORD_RE.findall(text.lower()):
        if word in _UNITS or word in _TENS:
            value = _UNITS.get(word, _TENS.get(word, 0))
            values.add(Decimal(value))
            # "twenty five" and "hundred twenty" continue a phrase; "two three" or "five twenty" start anew
            fits = (
                current % 100 == 0
                if word in _TENS
                else current % 10 == 0 and (value < 10 or current % 100 == 0)
            )
            if in_phrase and fits:
                current += value
            else:
                close_phrase()
                current = value
            in_phrase = True
        elif word in _SCALES:
            scale = _SCALES[word]
            values.add(Decimal(scale))
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
            in_phrase = True
        elif word == "and" and in_phrase:
            continue  # "two hundred and five"
        else:
            close_phrase()
            stem = word[:-1] if word.endswith("s") and word[:-1] in _ORDINALS else word
            if stem in _ORDINALS:
                values.add(Decimal(_ORDINALS[stem]))
            elif word in _SPECIAL:
                values.update(_SPECIAL[word])
    close_phrase()
    return values


def number_values(text: str) -> set[Decimal]:
    """Every numeric value ``text`` mentions: all readings of its digit literals and its number words."""
    values: set[Decimal] = set()
    for literal in number_literals(text):
        for reading in literal.readings:
            values.update(reading)
    values.update(_word_values(text))
    return values


def missing_numbers(original: str, rewrite: str) -> list[str]:
    """Digit literals of ``original`` that ``rewrite`` does not contain (distinct, in order of appearance)."""
    present = number_values(rewrite)
    missing: list[str] = []
    for literal in number_literals(original):
        if any(reading <= present for reading in literal.readings):
            continue
        if literal.text not in missing:
            missing.append(literal.text)
    return missing
