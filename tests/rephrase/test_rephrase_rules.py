"""The rules that decide whether a reply is a rewrite: prompt building, parsing, numbers, the judge."""

from __future__ import annotations

import pytest

from corewarding.errors import ConfigError
from corewarding.rephrase.judge import EMPTY, LOST_NUMBER, OK, UNPARSABLE, VERBATIM, judge_reply
from corewarding.rephrase.numbers import missing_numbers, number_literals
from corewarding.rephrase.pipeline import attempt_seed
from corewarding.rephrase.prompt import build_messages, default_instruction, load_instruction, parse_reply

# ------------------------------------------------------------------------------------------ prompt


def test_default_instruction_is_the_papers_and_the_question_follows_a_blank_line(shared_data):
    instruction = default_instruction()
    assert instruction == (shared_data / "rephrase_prompt.txt").read_text(encoding="utf-8")
    assert instruction.rstrip().endswith("### RESULT_END")
    messages = build_messages(instruction, "  What is $1+1$?\n")
    assert messages == [{"role": "user", "content": instruction.rstrip("\n") + "\n\nWhat is $1+1$?"}]


def test_custom_prompt_with_placeholder_and_one_without_markers(tmp_path):
    good = tmp_path / "p.txt"
    good.write_text("Rewrite:\n{question}\nAnswer as ### RESULT_START REWRITE: ... ### RESULT_END")
    text = load_instruction(good)
    assert (
        build_messages(text, "Q?")[0]["content"]
        == "Rewrite:\nQ?\nAnswer as ### RESULT_START REWRITE: ... ### RESULT_END"
    )
    bad = tmp_path / "bad.txt"
    bad.write_text("Rewrite this question please.")
    with pytest.raises(ConfigError, match=r"bad\.txt.*RESULT_START"):
        load_instruction(bad)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_instruction(tmp_path / "missing.txt")


def test_parse_reply_statuses():
    block = "### RESULT_START\nORIGINAL:\nold\nREWRITE:\n  new question  \n### RESULT_END"
    assert parse_reply(block).rewrite == "new question"
    assert parse_reply("chatter before\n" + block + "\nchatter after").rewrite == "new question"
    # a reasoning model drafts the markers while thinking: the draft is ignored
    thinking = "<think>### RESULT_START\nREWRITE:\ndraft\n### RESULT_END</think>" + block
    assert parse_reply(thinking).rewrite == "new question"
    assert parse_reply("<think>### RESULT_START\nREWRITE:\ndraft\n### RESULT_END").status == UNPARSABLE
    assert parse_reply("").status == EMPTY
    assert parse_reply(None).status == EMPTY
    assert parse_reply("### RESULT_START\nREWRITE:\n\n### RESULT_END").status == EMPTY
    assert parse_reply("no markers at all").status == UNPARSABLE
    assert "cut off" in parse_reply("### RESULT_START\nREWRITE:\nhalf a reply").reason
    assert parse_reply("### RESULT_START\nORIGINAL: x\n### RESULT_END").status == UNPARSABLE


# ----------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("original", "rewrite"),
    [
        ("Pay 1,000 dollars.", "Pay 1000 euros."),
        ("Pay 1000 dollars.", "Pay $1{,}000$ euros."),
        ("Pay $1\\,000$.", "Pay 1,000."),
        ("It costs 0.50.", "It costs .5 units."),
        ("Find $x^2 - 3 = -2$.", "Solve x squared minus three equals negative two."),
        ("Compute $\\frac12 + \\dfrac34$.", "Add one half and three quarters."),
        ("Take 1/3 of 25 apples.", "Take one-third of twenty-five pears."),
        ("There are 205 birds.", "There are two hundred and five birds."),
        ("In base 2 and base 16.", "In binary and hexadecimal."),
        ("Point (1,234) lies on it.", "The point with x = 1 and y = 234 lies on it."),
        ("The 3rd term.", "The third term."),
        ("[asy]draw((0,0)--(2.5,7));[/asy] What is 5?", "What is five?"),
        ("Evaluate $\\log_432$.", "To what power must 4 be raised to give 32?"),
    ],
)
def test_numbers_kept(original, rewrite):
    assert missing_numbers(original, rewrite) == []


@pytest.mark.parametrize(
    ("original", "rewrite", "missing"),
    [
        ("Three friends pay 11 each; 2 more join.", "Five roommates pay 11 each; two more join.", []),
        ("The 3 friends; then 2 more.", "The five friends; then two more.", ["3"]),
        ("It costs 1,500.", "It costs 1,050.", ["1,500"]),
        ("Take 12 eggs.", "Take 1 and 2 eggs.", ["12"]),
        ("Compute $\\frac12$.", "Compute twelve.", ["1", "2"]),
        ("Rate 0.25 and 7.", "Rate one quarter.", ["7"]),
        (
            'Find $N$. [asy]draw((0,0)--(7,1)); label("21",(0.5,0.8),S); label("$N$",(6,1));[/asy]',
            "Find N.",
            ["21"],
        ),
    ],
)
def test_numbers_lost(original, rewrite, missing):
    assert missing_numbers(original, rewrite) == missing


def test_number_literals_read_lists_and_groupings():
    assert [n.text for n in number_literals("{1,2,3} and 12,345.5 and 3.14.")] == [
        "1",
        "2",
        "3",
        "12,345.5",
        "3.14",
    ]


def test_number_rule_accepts_most_published_rewrites(shared_data):
    """The published Qwen3-32B rewrites of MATH mostly keep their numbers; the rule must accept them."""
    from corewarding.data import load_pairs

    pairs = load_pairs(
        shared_data / "train/math/train_original.parquet",
        shared_data / "train/math/train_rewrite_Qwen3-32B.parquet",
        limit=400,
    )
    accepted = sum(not missing_numbers(a.question, b.question) for a, b in pairs)
    assert accepted / len(pairs) > 0.85


# ------------------------------------------------------------------------------------------- judge


def test_judge_reply_each_status():
    q = "A band has 98 members in 2 rows."

    def block(text: str) -> str:
        return f"### RESULT_START\nORIGINAL:\n{q}\nREWRITE:\n{text}\n### RESULT_END"

    assert judge_reply(q, block("An orchestra of 98 players sits in 2 lines.")).status == OK
    assert judge_reply(q, block("A  band has 98\nmembers in 2 rows.  ")).status == VERBATIM
    lost = judge_reply(q, block("An orchestra of 98 players sits in lines."))
    assert lost.status == LOST_NUMBER and "2" in lost.reason
    assert judge_reply(q, block("An orchestra sits in lines."), check_numbers=False).status == OK
    assert judge_reply(q, "just text").status == UNPARSABLE
    assert judge_reply(q, "   ").status == EMPTY


def test_attempt_seeds_are_distinct_and_reproducible():
    seeds = {attempt_seed(0, row, attempt) for row in range(50) for attempt in range(4)}
    assert len(seeds) == 200
    assert attempt_seed(0, 3, 1) == attempt_seed(0, 3, 1) != attempt_seed(1, 3, 1)
