"""Per-segment token budgets: long enough for slow speech, and text split so each one fits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.codec.protocol import TOKENS_PER_SECOND
from runtime.codec.text_split import split_text
from runtime.codec.token_budget import MIN_SEGMENT_CHARS, plan_segments, token_budget

words = st.sampled_from(
    ["Hello", "world.", "How", "are", "you?", "fine,", "<laugh>", "<sigh>", "2024", "555-1234",
     "Well—", "yes;", "...", "averyveryverylongwordthatneedscutting", "\n\n"]
)
texts = st.one_of(st.lists(words, max_size=120).map(" ".join), st.text(max_size=400))


def test_budget_covers_speech_three_times_slower_than_narration():
    # Narration runs at about 15 characters a second; the budget must not cut off speech at a
    # third of that (slow, deliberate, with pauses), for short and long segments alike.
    for text in ["Hi.", "Hello there, nice to meet you.", "x" * 240]:
        slow_seconds = len(text) / (15 / 3)
        assert token_budget(text) >= slow_seconds * TOKENS_PER_SECOND
        assert token_budget(text) % 7 == 0  # whole frames


def test_tags_and_digits_need_more_time_than_their_characters():
    plain = token_budget("Oh well, here we go again.")
    assert token_budget("Oh well, <sigh> here we go again.") >= plain + TOKENS_PER_SECOND
    assert token_budget("Call 5551234 now.") > token_budget("Call abcdefg now.")


def test_budget_is_far_below_a_fixed_limit_for_short_text():
    # What "not a fixed number" buys: a one-word answer cannot run on for minutes.
    assert token_budget("Yes.") < 400


@settings(max_examples=150)
@given(text=texts, max_chars=st.integers(20, 300), max_tokens=st.integers(7, 5000))
def test_plan_keeps_the_text_and_fits_every_segment_it_can(text, max_chars, max_tokens):
    segments = plan_segments(text, max_chars, max_tokens)
    assert "".join("".join(s.split()) for s in segments) == "".join(text.split())
    for segment in segments:
        assert segment and len(segment) <= max_chars
        # Only segments already down to the floor may exceed the limit (they are then cut by it
        # and reported); anything longer was split until it fits.
        assert token_budget(segment) <= max_tokens or len(segment) <= MIN_SEGMENT_CHARS


def test_plan_is_split_text_when_the_limit_is_roomy():
    text = "One sentence here. " * 30
    assert plan_segments(text, 240, 100_000) == split_text(text, 240)


def test_a_low_limit_splits_at_sentences_first():
    text = " ".join(["This is a sentence of moderate length, with a clause."] * 6)
    segments = plan_segments(text, 240, 2000)
    assert all(s == "This is a sentence of moderate length, with a clause." for s in segments)
    assert len(segments) == 6
