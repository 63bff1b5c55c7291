"""TextStream: text fed in pieces comes out as speakable units, by text_split's rules, with
nothing lost or added, each unit as soon as it is complete."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from runtime.codec.text_split import CLAUSE_BREAK, normalise
from runtime.codec.text_stream import TextStream, _clause_end


def feed_words(stream: TextStream, text: str, *, every_s: float = 0.05) -> list[tuple[int, str]]:
    """Feed `text` a word at a time (with its trailing space); (word index, unit) released."""
    out = []
    for index, word in enumerate(text.split(" ")):
        out += [(index, unit) for unit in stream.feed(word + " ", index * every_s)]
    return out


def test_a_sentence_is_released_when_the_space_after_its_end_arrives():
    stream = TextStream()
    assert stream.feed("Hello there", 0.0) == []
    assert stream.feed(", my friend.", 0.1) == []  # "friend." might still be "friend.com"
    assert stream.feed(" How", 0.2) == ["Hello there, my friend."]
    assert stream.flush() == ["How"]


def test_the_units_are_what_split_text_would_cut_at_sentence_ends():
    text = 'One. Two words! "Three, four?" she asked. Five\u2026 six.'
    released = [unit for _, unit in feed_words(TextStream(), text)]
    # Each sentence alone (split_text would also pack short ones together; the socket packs
    # only what is queued while the voice is busy).
    assert released == ["One.", "Two words!", '"Three, four?"', "she asked.", "Five\u2026", "six."]


def test_a_long_sentence_is_spoken_clause_by_clause():
    text = ("This sentence goes on for quite a while, with one clause after another, and "
            "another one after that, so that waiting for its end would keep the voice silent "
            "for seconds.")
    released = feed_words(TextStream(clause_chars=80), text)
    units = [unit for _, unit in released]
    assert units[0] == "This sentence goes on for quite a while, with one clause after another,"
    # Released once the sentence in progress passed 80 characters, long before its end.
    assert released[0][0] < len(text.split(" ")) - 10
    assert " ".join(units) == text


def test_a_writer_that_pauses_mid_sentence_gets_its_clause_spoken():
    stream = TextStream(clause_after_s=1.0)
    assert stream.feed("Let me check the calendar, ", 0.0) == []
    assert stream.deadline() == 1.0
    assert stream.poll(0.9) == []
    assert stream.poll(1.0) == ["Let me check the calendar,"]
    assert stream.deadline() is None


def test_short_clauses_wait_for_more():
    stream = TextStream(clause_after_s=1.0, min_clause_chars=16)
    stream.feed("Well, ", 0.0)
    assert stream.poll(5.0) == []
    assert stream.flush() == ["Well,"]


def test_a_sentence_without_clauses_is_cut_at_a_word_once_it_is_too_long():
    stream = TextStream(max_chars=30)
    units = [unit for _, unit in feed_words(stream, "word " * 20)] + stream.flush()
    assert all(len(unit) <= 30 for unit in units)
    assert " ".join(units).split() == ["word"] * 20


def test_one_endless_word_is_cut_hard():
    stream = TextStream(max_chars=10)
    assert stream.feed("x" * 25, 0.0) == ["x" * 10, "x" * 10]
    assert stream.flush() == ["x" * 5]


def test_the_last_word_may_still_grow():
    stream = TextStream(max_chars=20, clause_chars=5, clause_after_s=0.0)
    stream.feed("aaaa, bbbb, supercalifr", 0.0)
    assert stream.flush()[-1].endswith("supercalifr")
    stream.feed("aaaaaaaaaaaaaa, supercalifr", 0.0)
    assert stream.feed("agilistic ", 0.1)[-1] != "supercalifr"


text_pieces = st.lists(
    st.text(alphabet=st.sampled_from(list("ab .,;!?\n\u2014\"")), max_size=12), max_size=40
)


@settings(max_examples=300, deadline=None)
@given(pieces=text_pieces, gaps=st.lists(st.floats(0.0, 2.0), max_size=40),
       max_chars=st.integers(5, 60))
def test_nothing_is_lost_or_added_and_units_fit(pieces, gaps, max_chars):
    stream = TextStream(max_chars=max_chars, clause_chars=max_chars // 2 + 1,
                        min_clause_chars=3)
    now, units = 0.0, []
    for index, piece in enumerate(pieces):
        now += gaps[index] if index < len(gaps) else 0.1
        units += stream.feed(piece, now)
        units += stream.poll(now + 0.5)
    units += stream.flush()
    assert "".join("".join(pieces).split()) == "".join("".join(u.split()) for u in units)
    for unit in units:
        assert unit and unit == " ".join(unit.split())
        assert len(unit) <= max_chars
    assert stream.pending == 0 and stream.deadline() is None


def _clause_end_by_scan(buffer: str, settled: int, min_chars: int) -> int:
    """The rule-2 cut as TextStream first computed it: every clause boundary before `settled`
    checked in turn (quadratic in the buffer), the last one that qualifies kept."""
    cut = 0
    for match in CLAUSE_BREAK.finditer(buffer, 0, settled):
        if len(normalise(buffer[: match.end()])) >= min_chars:
            cut = match.end()
    return cut


@settings(max_examples=1000, deadline=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab .,;:!\n\t\u00a0\u2014\u2013\"")),
                    max_size=60),
       settled=st.integers(0, 60), min_chars=st.integers(0, 30))
def test_the_clause_cut_from_the_last_boundary_equals_the_scan_of_all(text, settled, min_chars):
    settled = min(settled, len(text))
    assert _clause_end(text[:settled], min_chars) == _clause_end_by_scan(text, settled, min_chars)
