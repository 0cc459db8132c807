"""vote / batch_vote: equivalence classes, None ignored, first-seen tie-break, exact mode."""

from __future__ import annotations

from corewarding.answers import batch_vote, vote


def test_equivalent_answers_form_one_class() -> None:
    answers = ["3", "\\frac12", "0.5", "3", None, "1/2"]
    assert vote(answers) == ("\\frac12", 3)  # 3 votes for one half beat 2 for three
    assert vote(answers, exact=True) == ("3", 2)  # the paper's exact-string rule splits the half


def test_ties_go_to_the_class_seen_first() -> None:
    assert vote(["7", "0.5", "\\frac{1}{2}", "7.0"]) == ("7", 2)
    assert vote(["0.5", "7", "7.0", "\\frac{1}{2}"]) == ("0.5", 2)
    assert vote(["b", "a"], exact=True) == ("b", 1)


def test_representative_is_the_first_seen_string_as_written() -> None:
    assert vote([" 1/2 ", "0.5", "\\dfrac{1}{2}"]) == (" 1/2 ", 3)


def test_none_and_blank_answers_do_not_vote() -> None:
    assert vote([None, None]) == (None, 0)
    assert vote([]) == (None, 0)
    assert vote([None, "  ", "4"]) == ("4", 1)
    assert vote([None, None], exact=True) == (None, 0)


def test_exact_mode_compares_the_strings_as_given() -> None:
    # the paper's Counter(answers).most_common(1): " 5" is not "5" (lenient extraction trims answers before
    # they vote; the paper's boxed extraction does not)
    assert vote(["5", " 5", "5.0", "5.0", "5.0"], exact=True) == ("5.0", 3)
    assert vote(["5", " 5", "5.0"], exact=True) == ("5", 1)
    assert vote([" 5", "5", "5"], exact=True) == ("5", 2)
    assert vote(["  ", "", None, "\n\t "], exact=True) == (None, 0)  # blank strings do not vote


def test_batch_vote_matches_single_votes() -> None:
    groups = [
        ["\\frac{2}{4}", "0.5", "1", "1", "1"],
        [None, "x+1", "1+x", "(2,3]", "(2, 3]", "(2,3]"],
        [],
        ["10{,}000", "10000", "9999"],
        ["30^\\circ", "30", "60"],
    ]
    expected = [("1", 3), ("(2,3]", 3), (None, 0), ("10{,}000", 2), ("30^\\circ", 2)]
    assert batch_vote(groups) == expected
    assert [vote(g) for g in groups] == expected


def test_hostile_answers_neither_win_nor_break_the_vote() -> None:
    big = "9^{9^{9^{9^{9}}}}"
    assert vote([big, "3", "3.0"]) == ("3", 2)
    assert vote([big, big, "3"]) == (big, 2)  # identical strings still agree, without evaluation


def test_a_class_counts_votes_not_spellings() -> None:
    # 7 has two votes in one spelling; 5 has four votes in two spellings ("5.0" once, "5" three times): the
    # count is 4. Counting spellings instead of votes would report 2, and elect 5 over three votes for 7.
    assert vote(["7", "7", "5.0", "5", "5", "5"]) == ("5.0", 4)
    assert vote(["7", "7", "7", "5.0", "5"]) == ("7", 3)
    # the same votes spread over more spellings than the winner has votes
    assert vote(["1", "1", "1", "0.5", "1/2", "\\frac12", "2/4"]) == ("0.5", 4)
    assert batch_vote([["7", "7", "5.0", "5", "5", "5"], ["2", "3", "3"]]) == [("5.0", 4), ("3", 2)]


def test_a_blank_answer_in_exact_mode_skips_only_itself() -> None:
    # a blank vote is passed over, and the answers after it still count
    assert vote(["1", "", "2", " ", "2"], exact=True) == ("2", 2)
    assert vote(["", "3"], exact=True) == ("3", 1)


def test_the_timeout_reaches_every_comparison(monkeypatch) -> None:
    """``timeout`` bounds each equivalence check of the vote; it is passed on, not replaced by the default."""
    from corewarding.answers import equivalence, voting

    seen: list[float] = []

    def recording(pairs, timeout=equivalence.DEFAULT_TIMEOUT_S, progress=None):
        seen.append(timeout)
        return equivalence.batch_equivalent(pairs, timeout=timeout)

    monkeypatch.setattr(voting, "batch_equivalent", recording)
    assert vote(["\\frac12", "0.5", "3"], timeout=7.5) == ("\\frac12", 2)
    assert batch_vote([["1", "1.0"], ["x", "y"]], timeout=0.25) == [("1", 2), ("x", 1)]
    assert seen and set(seen) == {7.5, 0.25}
