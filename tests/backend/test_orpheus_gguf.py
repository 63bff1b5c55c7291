"""The tiny Orpheus GGUF every suite uses: real vocabulary, deterministic, always valid audio.

Loaded with the real llama.cpp (llama-cpp-python, in a child process so that a native crash fails
these tests with its signal instead of ending the run), greedy and with the sampling the frontend
uses, in F16 and Q8_0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fixtures.llama_worker import LlamaWorker
from tests.fixtures.orpheus_gguf import (
    AUDIO_BASE_ID,
    CODEBOOK_SIZE,
    END_OF_SPEECH_ID,
    EOT_ID,
    FRAME_TOKENS,
    SHAPES,
    START_OF_SPEECH_ID,
    VOCAB_SIZE,
    audio_codes,
    audio_token_ids,
    audio_token_texts,
    build_vocab,
    chain_weights,
    write_orpheus_gguf,
)

PROMPTS = [
    "<|audio|>tara: Hello there, how are you today?<|eot_id|>",  # the community GGUF prompt
    # The canonical prompt: start_of_human, text, eot, end_of_human, start_of_ai, start_of_speech.
    "<custom_token_3><|begin_of_text|>leo: Hi! <laugh> Ça va?<|eot_id|>"
    "<custom_token_4><custom_token_5><custom_token_1>",
]
SAMPLED = {"temperature": 0.6, "top_p": 0.9, "repeat_penalty": 1.1}
GREEDY = {"temperature": 0.0}


def test_vocabulary_matches_orpheus_ids() -> None:
    tokens, types, merges = build_vocab()
    assert len(tokens) == len(types) == VOCAB_SIZE
    assert len(set(tokens)) == VOCAB_SIZE
    assert tokens[128000] == "<|begin_of_text|>"
    assert tokens[128009] == "<|eot_id|>"
    assert tokens[128257] == "<custom_token_1>"  # start_of_speech
    assert tokens[END_OF_SPEECH_ID] == "<custom_token_2>"
    assert tokens[AUDIO_BASE_ID] == "<custom_token_10>"
    assert tokens[-1] == f"<custom_token_{VOCAB_SIZE - 128256 - 1}>"
    assert merges and all(" " in m for m in merges)


def test_every_emitted_token_is_a_valid_audio_code_then_end_of_speech() -> None:
    ids = audio_token_ids(12)
    assert ids[-1] == END_OF_SPEECH_ID
    audio = ids[:-1]
    assert len(audio) == 12 * FRAME_TOKENS
    assert len(set(audio)) == len(audio)  # never repeats: repetition penalty cannot bite
    for i, token in enumerate(audio):
        code = token - AUDIO_BASE_ID - CODEBOOK_SIZE * (i % FRAME_TOKENS)
        assert 0 <= code < CODEBOOK_SIZE
        assert code == audio_codes(12)[i // FRAME_TOKENS][i % FRAME_TOKENS]
    assert audio_codes(1)[0][0] == 0  # code 0 is exercised
    texts = audio_token_texts(12)
    assert all(re.fullmatch(r"<custom_token_\d+>", t) for t in texts)


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    a = write_orpheus_gguf(tmp_path / "a.gguf", quant="F16", frames=3)
    b = write_orpheus_gguf(tmp_path / "b.gguf", quant="F16", frames=3)
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(b.read_bytes()).digest()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="quant must be one of"):
        write_orpheus_gguf(tmp_path / "x.gguf", quant="Q4_K")
    with pytest.raises(ValueError, match="frames need n_embd"):
        write_orpheus_gguf(tmp_path / "x.gguf", frames=100)
    with pytest.raises(ValueError, match="frames must be >= 1"):
        write_orpheus_gguf(tmp_path / "x.gguf", frames=0)


@pytest.fixture(scope="module", params=["Q8_0", "F16"])
def llama(request: pytest.FixtureRequest, tiny_gguf_factory: Callable[..., Path]
          ) -> Iterator[LlamaWorker]:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    worker = LlamaWorker(tiny_gguf_factory(request.param))
    yield worker
    worker.close()


@pytest.mark.parametrize("prompt", PROMPTS)
@pytest.mark.parametrize("sampling", [GREEDY, SAMPLED], ids=["greedy", "sampled"])
def test_llama_cpp_speaks_the_chain(llama: LlamaWorker, prompt: str,
                                    sampling: dict[str, float]) -> None:
    out = llama.call("complete", prompt=prompt, max_tokens=200, seed=7, **sampling)
    choice = out["choices"][0]
    assert choice["text"] == "".join(audio_token_texts())
    assert choice["finish_reason"] == "stop"  # <|eot_id|> after end_of_speech ends generation


def test_prompt_ids_follow_the_orpheus_tokenizer(llama: LlamaWorker) -> None:
    ids = llama.call("tokenize", text=PROMPTS[1])
    assert ids[:2] == [128259, 128000]
    assert ids[-4:] == [128009, 128260, 128261, 128257]
    text = llama.call("detokenize", ids=ids[2:-4])
    assert text == "leo: Hi! <laugh> Ça va?"


@settings(max_examples=8, deadline=None)
@given(frames=st.integers(min_value=1, max_value=55))
def test_the_chain_wins_by_a_wide_margin_for_any_length(frames: int) -> None:
    """The bigram logits (RMS norm, then the output matrix), computed exactly as llama.cpp does:
    after every chain token the next one leads by >= 20 logits, so sampling follows greedy."""
    embd, out = chain_weights(frames, SHAPES["tiny"].n_embd)
    sources = [START_OF_SPEECH_ID, EOT_ID, 1234, *audio_token_ids(frames)]
    expected = [audio_token_ids(frames)[0]] * 3 + [*audio_token_ids(frames)[1:], EOT_ID]
    h = embd[sources] / np.sqrt((embd[sources] ** 2).mean(axis=1, keepdims=True) + 1e-5)
    logits = h @ out.T
    top2 = np.sort(logits, axis=1)[:, -2:]
    assert list(logits.argmax(axis=1)) == expected
    assert (top2[:, 1] - top2[:, 0]).min() >= 20


@settings(max_examples=8, deadline=None)
@given(offset=st.integers(min_value=1, max_value=CODEBOOK_SIZE - 1),
       frames=st.integers(min_value=1, max_value=40))
def test_an_offset_model_speaks_other_valid_frames(offset: int, frames: int) -> None:
    """Several models in one test deployment: each speaks its own frames, all valid audio."""
    ids = audio_token_ids(frames, offset)
    assert ids[-1] == END_OF_SPEECH_ID and len(set(ids)) == len(ids)
    base = audio_codes(frames)
    for f, frame in enumerate(audio_codes(frames, offset)):
        assert all(0 <= c < CODEBOOK_SIZE for c in frame)
        assert frame != base[f]  # every frame differs from the unshifted model's
    embd, out = chain_weights(frames, SHAPES["tiny"].n_embd, offset)
    h = embd[ids] / np.sqrt((embd[ids] ** 2).mean(axis=1, keepdims=True) + 1e-5)
    assert list((h @ out.T).argmax(axis=1)) == [*ids[1:], EOT_ID]


def test_llama_cpp_speaks_the_offset_chain(tiny_gguf_factory: Callable[..., Path]) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    worker = LlamaWorker(tiny_gguf_factory("Q8_0", code_offset=1000))
    try:
        out = worker.call("complete", prompt=PROMPTS[0], max_tokens=200, seed=7, **SAMPLED)
    finally:
        worker.close()
    assert out["choices"][0]["text"] == "".join(audio_token_texts(code_offset=1000))
