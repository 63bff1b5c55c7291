"""The streaming token parser: chunking invariance, range safety, resync, end of speech."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.codec.protocol import (
    CUSTOM_TOKEN_BASE,
    END_OF_SPEECH_ID,
    MAX_AUDIO_N,
    audio_token_n,
    frame_to_token_text,
)
from runtime.codec.tokens import TokenStreamParser

codes = st.integers(min_value=0, max_value=4095)
frames_st = st.lists(st.tuples(*[codes] * 7), max_size=12)


def parse(chunks: list[str]) -> tuple[list[tuple[int, ...]], TokenStreamParser]:
    parser = TokenStreamParser()
    frames = [f for chunk in chunks for f in parser.feed(chunk)]
    frames += parser.finish()
    return frames, parser


def split_at(text: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(text)) for c in cuts})
    return [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]


@given(frames=frames_st, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=40))
def test_valid_stream_cut_anywhere_yields_the_same_frames(frames, cuts):
    text = "<custom_token_1>" + "".join(frame_to_token_text(f) for f in frames) + "<custom_token_2>"
    got, parser = parse(split_at(text, cuts))
    assert got == frames
    assert parser.ended
    assert parser.invalid_tokens == 0
    assert parser.dropped_tokens == 0
    assert parser.tokens_seen == 7 * len(frames) + 2


# Text made of token-like pieces, garbage and whitespace, to stress the scanner.
fragments = st.one_of(
    st.integers(min_value=0, max_value=40000).map(lambda n: f"<custom_token_{n}>"),
    st.sampled_from(
        ["<custom_", "token_", "<", ">", "12", "<custom_token_", " ", "\n", "<|eot_id|>"]
    ),
    st.text(max_size=8),
)


@settings(max_examples=300)
@given(pieces=st.lists(fragments, max_size=60), cuts=st.lists(st.integers(0, 600), max_size=30))
def test_any_text_never_crashes_never_yields_bad_codes_and_ignores_chunking(pieces, cuts):
    text = "".join(pieces)
    whole, whole_parser = parse([text])
    chunked, chunked_parser = parse(split_at(text, cuts))
    assert chunked == whole
    for attr in ("tokens_seen", "invalid_tokens", "dropped_tokens", "ended"):
        assert getattr(chunked_parser, attr) == getattr(whole_parser, attr)
    for frame in whole:
        assert len(frame) == 7
        assert all(isinstance(c, int) and 0 <= c < 4096 for c in frame)


def test_code_zero_is_kept_and_4096_is_rejected():
    zero = (0,) * 7
    top = (4095,) * 7
    frames, parser = parse([frame_to_token_text(zero) + frame_to_token_text(top)])
    assert frames == [zero, top]
    # Position 6 with code 4096 would be N = 10 + 7 * 4096: out of every position's range.
    frames, parser = parse([f"<custom_token_{MAX_AUDIO_N + 1}>"])
    assert frames == [] and parser.invalid_tokens == 1


def test_position_comes_from_the_token_number_not_a_count():
    # Code 4095 at position 0 and code 0 at position 1 are neighbouring numbers: a count-based
    # parser that lost a token would misread them; this parser reads each token's own position.
    frame = (4095, 0, 1, 2, 3, 4, 5)
    frames, _ = parse([frame_to_token_text(frame)])
    assert frames == [frame]


def test_resynchronises_after_a_lost_token_without_losing_good_frames():
    a, b, c = (1, 2, 3, 4, 5, 6, 7), (8, 9, 10, 11, 12, 13, 14), (0, 0, 0, 0, 0, 0, 0)
    broken = frame_to_token_text(b).replace(f"<custom_token_{audio_token_n(11, 3)}>", "")
    frames, parser = parse([frame_to_token_text(a) + broken + frame_to_token_text(c)])
    assert frames == [a, c]
    assert parser.dropped_tokens == 6  # the broken frame: 3 collected + 3 skipped until position 0
    assert parser.invalid_tokens == 0


def test_a_stray_out_of_range_token_inside_a_frame_is_skipped():
    a = (1, 2, 3, 4, 5, 6, 7)
    tokens = [f"<custom_token_{audio_token_n(c, p)}>" for p, c in enumerate(a)]
    tokens.insert(3, "<custom_token_999999>")
    frames, parser = parse(["".join(tokens)])
    assert frames == [a]
    assert parser.invalid_tokens == 1


def test_end_of_speech_stops_parsing_and_drops_the_partial_frame():
    a = (1, 2, 3, 4, 5, 6, 7)
    partial = "".join(f"<custom_token_{audio_token_n(9, p)}>" for p in range(3))
    parser = TokenStreamParser()
    assert parser.feed(frame_to_token_text(a) + partial) == [a]
    assert parser.partial_tokens == 3
    assert not parser.ended
    assert parser.feed("<custom_tok") == []
    assert parser.feed("en_2>" + frame_to_token_text(a)) == []
    assert parser.ended
    assert parser.dropped_tokens == 3


def test_feed_ids_matches_feed_text():
    frames = [(5, 6, 7, 8, 9, 10, 11), (0, 4095, 0, 4095, 0, 4095, 0)]
    ids = [CUSTOM_TOKEN_BASE + audio_token_n(c, p) for f in frames for p, c in enumerate(f)]
    parser = TokenStreamParser()
    assert parser.feed_ids([128000, 128257, *ids, END_OF_SPEECH_ID, *ids]) == frames
    assert parser.ended


def test_a_token_cut_by_the_end_of_the_stream_counts_as_invalid():
    parser = TokenStreamParser()
    parser.feed("<custom_token_12")
    assert parser.finish() == []
    assert parser.invalid_tokens == 1
