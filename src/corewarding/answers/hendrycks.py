"""The Co-rewarding paper's ground-truth grader: Hendrycks-style normalised exact string match.

A faithful port of ``strip_string`` and ``is_equiv`` (with their helpers ``fix_fracs``, ``fix_a_slash_b``,
``remove_right_units``, ``fix_sqrt``) from the paper's repository, github.com/resistzzz/Co-rewarding,
file ``Co-rewarding-I/verl/utils/reward_score/math.py`` (identical in ``Co-rewarding-II/``), itself
adapted by verl from the MATH reference grader of Hendrycks et al. as kept in lm-evaluation-harness
(``lm_eval/tasks/hendrycks_math``). Every MATH, DAPO-14k and OpenRS row of the paper's data has
``data_source = "DigitalLearningGmbH/MATH-lighteval"``, which verl's ``default_compute_score`` sends to
``math.compute_score``: reward 1 when the response's last box (``corewarding.data.boxed.paper_last_boxed``)
``is_equiv`` the ground truth, else 0.

The port keeps the original's behaviour, quirks included: ``0.5`` equals ``\\frac{1}{2}`` and ``1/2`` (the
only decimal rewritten), ``\\dfrac``/``\\tfrac`` equal ``\\frac``, spaces do not matter, but ``0.50`` is not
``\\frac12`` and ``2`` is not ``2.0``; any exception inside the normalisation (two ``"\\text{ "`` unit
suffixes, a trailing ``\\sqrt``) falls back to plain string equality. Pure Python, no dependencies,
cheap: it needs no worker pool.
"""

from __future__ import annotations

__all__ = ["is_equiv", "strip_string"]


def is_equiv(str1: str | None, str2: str | None) -> bool:
    """``strip_string(str1) == strip_string(str2)``; plain equality when normalising raises.

    As in the original, two ``None`` are equal and one ``None`` is not equal to anything (callers that must
    not reward a missing answer check for ``None`` first).
    """
    if str1 is None and str2 is None:
        return True
    if str1 is None or str2 is None:
        return False
    try:
        return strip_string(str1) == strip_string(str2)
    except Exception:
        return str1 == str2


def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    if len(substrs) > 1:
        for substr in substrs[1:]:
            new_str += "\\frac"
            if substr[0] == "{":  # an IndexError on "\\frac" at the very end, as in the original
                new_str += substr
            else:
                if len(substr) < 2:
                    return string
                a = substr[0]
                b = substr[1]
                if b != "{":
                    new_str += "{" + a + "}{" + b + "}" + substr[2:]
                else:
                    new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    if len(string.split("/")) != 2:
        return string
    a_text, b_text = string.split("/")
    try:
        a = int(a_text)
        b = int(b_text)
        if string != f"{a}/{b}":
            return string
        return "\\frac{" + str(a) + "}{" + str(b) + "}"
    except ValueError:
        return string


def _remove_right_units(string: str) -> str:
    # "\\text{ " only ever occurs (at least in the val set) when describing units
    if "\\text{ " in string:
        splits = string.split("\\text{ ")
        if len(splits) != 2:  # the original asserts; is_equiv then falls back to plain equality
            raise ValueError("more than one '\\text{ ' in an answer")
        return splits[0]
    return string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        # split[0] is an IndexError on "\\sqrt" at the very end, as in the original
        new_string += "\\sqrt" + split if split[0] == "{" else "\\sqrt{" + split[0] + "}" + split[1:]
    return new_string


def strip_string(string: str) -> str:
    """The MATH grader's normalisation of an answer string (may raise, as the original does)."""
    # linebreaks
    string = string.replace("\n", "")
    # remove inverse spaces
    string = string.replace("\\!", "")
    # replace \\ with \
    string = string.replace("\\\\", "\\")
    # replace tfrac and dfrac with frac
    string = string.replace("tfrac", "frac")
    string = string.replace("dfrac", "frac")
    # remove \left and \right
    string = string.replace("\\left", "")
    string = string.replace("\\right", "")
    # remove circ (degrees)
    string = string.replace("^{\\circ}", "")
    string = string.replace("^\\circ", "")
    # remove dollar signs
    string = string.replace("\\$", "")
    # remove units (on the right)
    string = _remove_right_units(string)
    # remove percentage: twice, as the original does (it writes "\\%" and "\%", the same string); the
    # second pass matters when removing one "\%" joins a backslash and a "%" into another
    string = string.replace("\\%", "")
    string = string.replace("\\%", "")
    # " 0." equivalent to " ." and "{0." equivalent to "{." Alternatively, add "0" if "." is the start
    string = string.replace(" .", " 0.")
    string = string.replace("{.", "{0.")
    # if empty, return empty string
    if len(string) == 0:
        return string
    if string[0] == ".":
        string = "0" + string
    # to consider: get rid of e.g. "k = " or "q = " at beginning
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    # fix sqrt3 --> sqrt{3}
    string = _fix_sqrt(string)
    # remove spaces
    string = string.replace(" ", "")
    # \frac1b or \frac12 --> \frac{1}{b} and \frac{1}{2}, etc. Even works with \frac1{72} (but not \frac{72}1)
    string = _fix_fracs(string)
    # manually change 0.5 --> \frac{1}{2}
    if string == "0.5":
        string = "\\frac{1}{2}"
    # NOTE: X/Y changed to \frac{X}{Y} in dataset, but in simple cases fix in case the model output is X/Y
    string = _fix_a_slash_b(string)
    return string
