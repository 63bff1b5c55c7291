"""Long-text splitting (never drops text) and the streaming crossfade joiner."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.codec.text_split import SegmentJoiner, crossfade_join, join_overlap, split_text

words = st.sampled_from(
    [
        "Hello",
        "world.",
        "How",
        "are",
        "you?",
        "I'm",
        "fine,",
        "thanks!",
        "<laugh>",
        "Well—",
        "yes;",
        "\u201cQuoted.\u201d",
        "averyveryverylongwordthatneedscutting",
        "\n\n",
        "  ",
        "...",
    ]
)


@settings(max_examples=200)
@given(
    text=st.one_of(st.lists(words, max_size=80).map(" ".join), st.text(max_size=300)),
    max_chars=st.integers(min_value=1, max_value=120),
)
def test_split_never_drops_or_adds_text(text, max_chars):
    pieces = split_text(text, max_chars)
    assert "".join("".join(p.split()) for p in pieces) == "".join(text.split())
    for piece in pieces:
        assert piece == piece.strip() and piece
        assert len(piece) <= max_chars
    assert split_text(text, max_chars) == pieces  # deterministic


def test_split_prefers_sentence_boundaries_and_packs_short_sentences():
    text = "One two three. Four five six! Seven eight nine? Ten."
    assert split_text(text, 30) == ["One two three. Four five six!", "Seven eight nine? Ten."]
    assert split_text(text, 20) == ["One two three.", "Four five six!", "Seven eight nine?", "Ten."]
    assert split_text(text, 1000) == [text]
    assert split_text("Short.") == ["Short."]
    assert split_text("   ") == []


def test_long_sentence_falls_back_to_clauses_then_words():
    text = "first clause here, second clause here, third clause here"
    assert split_text(text, 20) == [
        "first clause here,",
        "second clause here,",
        "third clause here",
    ]
    assert split_text("aaaa bbbb cccc", 9) == ["aaaa bbbb", "cccc"]
    assert split_text("abcdefghij", 4) == ["abcd", "efgh", "ij"]


def test_emotion_tags_stay_whole():
    pieces = split_text("I can't believe it <laugh> really. That is <sigh> too much.", 30)
    assert any("<laugh>" in p for p in pieces) and any("<sigh>" in p for p in pieces)


segment = st.integers(min_value=0, max_value=60).flatmap(
    lambda n: st.lists(st.integers(-32768, 32767), min_size=n, max_size=n).map(
        lambda xs: np.array(xs, dtype=np.int16)
    )
)


@settings(max_examples=200, deadline=None)
@given(
    segments=st.lists(segment, max_size=5),
    crossfade=st.integers(min_value=0, max_value=12),
    cut=st.integers(min_value=1, max_value=25),
    told=st.floats(min_value=0, max_value=1),
)
def test_streaming_joiner_equals_the_whole_join(segments, crossfade, cut, told):
    """`told`: how much of what is still to come each push's `at_least` reveals (0: nothing)."""
    joiner = SegmentJoiner(crossfade_ms=crossfade * 1000 / 24000)
    assert joiner.crossfade == crossfade
    out = []
    for seg in segments:
        for i in range(0, seg.size, cut):
            received = min(seg.size, i + cut)
            at_least = received + int(told * (seg.size - received))
            out.append(joiner.push(seg[i : i + cut], at_least=at_least))
        out.append(joiner.end_segment())
    out.append(joiner.finish())
    streamed = np.concatenate(out) if out else np.zeros(0, np.int16)
    whole = crossfade_join(segments, crossfade)
    assert np.array_equal(streamed, whole)
    sizes = [s.size for s in segments if s.size]
    overlaps = sum(join_overlap(crossfade, a, b) for a, b in itertools.pairwise(sizes))
    assert whole.size == sum(sizes) - overlaps


def test_a_segment_known_to_go_on_is_not_held_back():
    """What no join can reach goes out at once: with the segment's length known to be at least
    4096 samples, the first 512 all go out; without it, the last 480 received wait."""
    head = np.arange(512, dtype=np.int16)
    told = SegmentJoiner(crossfade_ms=20)
    assert np.array_equal(told.push(head, at_least=4096), head)
    assert told.push(np.zeros(3000, np.int16), at_least=4096).size == 3000
    assert told.push(np.zeros(584, np.int16), at_least=4096).size == 584 - 480  # the join's
    assert told.end_segment().size == 0 and told.finish().size == 480
    assert SegmentJoiner(crossfade_ms=20).push(head).size == 512 - 480


def test_a_cut_short_segment_fades_its_held_tail_to_silence():
    """`end_segment(fade_out=True)`: the last crossfade's worth of samples ramp linearly down
    (sample i of n scaled by 1 - (i + 0.5) / n), and only those."""
    joiner = SegmentJoiner(crossfade_ms=20)  # 480 samples
    level = 9600  # ramps exactly through 9590, 9570, ..., 10 (no rounding ties)
    pcm = np.concatenate([joiner.push(np.full(2048, level, np.int16)),
                          joiner.end_segment(fade_out=True), joiner.finish()])
    assert pcm.size == 2048 and np.all(pcm[: 2048 - 480] == level)
    assert np.array_equal(pcm[2048 - 480 :], np.arange(9590, 0, -20))


def test_orpheus_segments_lose_exactly_one_crossfade_per_join():
    joiner = SegmentJoiner(crossfade_ms=20)  # 480 samples
    segments = [np.full(2048 * k, 1000 * k, dtype=np.int16) for k in (1, 3, 2)]
    out = []
    for seg in segments:
        out += [joiner.push(seg), joiner.end_segment()]
    pcm = np.concatenate([*out, joiner.finish()])
    assert pcm.size == sum(s.size for s in segments) - 2 * 480
    # The seam ramps between the two levels instead of jumping.
    seam = pcm[2048 - 480 : 2048]
    assert seam[0] < seam[-1] and seam.min() >= 1000 and seam.max() <= 3000
    assert np.all(np.diff(seam.astype(np.int32)) >= 0)
