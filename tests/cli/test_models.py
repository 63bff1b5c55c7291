"""The model manifest, its checks and the GPU memory budget: pure functions, no server."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orpheus_deploy.config import Settings
from orpheus_deploy.errors import ConfigError, InputError
from orpheus_deploy.gguf_meta import ORPHEUS_3B, read_dims
from orpheus_deploy.gpu_memory import GIB, memory_budget
from orpheus_deploy.models import (
    DEFAULT_MODEL_NAME,
    RESERVED_NAMES,
    STANDARD_VOICES,
    ModelEntry,
    check_registration,
    manifest,
    model_name_from_object,
    validate_language,
    validate_name,
    validate_prompt,
    validate_voices,
    with_model,
    without_model,
)
from orpheus_deploy.state import DeploymentState
from tests.fixtures.orpheus_gguf import SHAPES

# Orpheus 3B at Q8_0, as the design notes measure it.
Q8_3B = int(3.5e9)
FR = ModelEntry(name="orpheus-fr", object="fr.gguf", language="fr",
                voices=("pierre", "amelie", "marie"), size=int(2.0e9), dims=ORPHEUS_3B)


def state_with(*entries: ModelEntry, default_size: int = int(2.0e9)) -> DeploymentState:
    state = DeploymentState(model_object="en.gguf", model_size=default_size,
                            model_dims=ORPHEUS_3B.as_dict())
    for entry in entries:
        state = with_model(state, entry)
    return state


def test_the_cli_knows_the_codecs_voices_and_the_frontends_model_names() -> None:
    # The CLI does not import the codec (numpy); these lists must not drift apart.
    from runtime.codec.protocol import VOICES
    from runtime.frontend.speech import MODEL_ALIASES

    assert tuple(VOICES) == STANDARD_VOICES
    assert set(MODEL_ALIASES) <= RESERVED_NAMES and DEFAULT_MODEL_NAME in RESERVED_NAMES


@pytest.mark.parametrize(("obj", "name"), [
    ("Orpheus-3b-French-FT-Q4_K_M.gguf", "orpheus-3b-french-ft-q4_k_m"),
    ("voices/My Voice (v2).gguf", "my-voice-v2"),
    ("__.gguf", "model"),
])
def test_model_name_from_the_object_name(obj: str, name: str) -> None:
    assert model_name_from_object(obj) == name
    assert validate_name(name) == name


def test_voice_names_in_any_script_but_no_separators() -> None:
    assert validate_voices(" Pierre, amelie ,marie") == ("pierre", "amelie", "marie")
    # Orpheus' research releases name Korean, Hindi and Mandarin voices in their own scripts.
    assert validate_voices("유나,준서,ऋतिका,长乐") == ("유나", "준서", "ऋतिका", "长乐")
    for bad in ("a b", "a:b", "x,x", ",", "<laugh>", "a{text}"):
        with pytest.raises(InputError):
            validate_voices(bad)


def test_language_prompt_and_reserved_names() -> None:
    assert validate_language("FR") == "fr" and validate_language("pt-BR") == "pt-br"
    assert validate_prompt("{text}") == "{text}"
    for bad in ("french", "f"):
        with pytest.raises(InputError):
            validate_language(bad)
    for bad in ("{voice}", "{voice}: {text} {text}", "{speaker}: {text}"):
        with pytest.raises(InputError):
            validate_prompt(bad)
    for bad in ("orpheus", "tts-1", "Has Caps", ""):
        with pytest.raises(InputError):
            validate_name(bad)


def test_voice_names_are_unique_across_models() -> None:
    state = state_with(FR)
    with pytest.raises(InputError, match=r"'tara' \(model 'orpheus'\)"):
        check_registration(dataclasses.replace(FR, name="mine", object="mine.gguf",
                                               voices=("tara", "nova")), state, "en.gguf")
    with pytest.raises(InputError, match=r"'marie' \(model 'orpheus-fr'\)"):
        check_registration(dataclasses.replace(FR, name="mine", object="mine.gguf",
                                               voices=("marie",)), state, "en.gguf")
    with pytest.raises(InputError, match="already registered as model 'orpheus-fr'"):
        check_registration(dataclasses.replace(FR, name="other", voices=("zed",)), state,
                           "en.gguf")
    with pytest.raises(InputError, match="is the default model"):
        check_registration(dataclasses.replace(FR, object="en.gguf"), state, "en.gguf")
    # Re-registering a model under its own name (new voices) is an update, not a conflict.
    check_registration(dataclasses.replace(FR, voices=("pierre", "amelie")), state, "en.gguf")


def test_the_manifest_is_the_default_first_then_the_others_by_name() -> None:
    de = dataclasses.replace(FR, name="orpheus-de", object="de.gguf", voices=("jana",),
                             language="de")
    state = state_with(FR, de)
    models = manifest(Settings(project="p-123456"), state)
    assert [m.name for m in models] == ["orpheus", "orpheus-de", "orpheus-fr"]
    assert models[0].default and models[0].voices == STANDARD_VOICES
    assert models[0].dims == ORPHEUS_3B and models[0].size == int(2.0e9)
    assert with_model(state, FR) == state  # idempotent
    assert [m.name for m in manifest(Settings(project="p-123456"),
                                     without_model(state, "orpheus-de"))] == [
        "orpheus", "orpheus-fr"]
    # Survives the trip through the state file.
    again = DeploymentState.from_json(state.to_json())
    assert manifest(Settings(project="p-123456"), again) == models
    assert manifest(Settings(project="p-123456"), DeploymentState()) == []


def test_dimensions_come_from_the_gguf_header(tiny_gguf_q8: Path) -> None:
    dims = read_dims(tiny_gguf_q8)
    tiny = SHAPES["tiny"]
    assert dims is not None
    assert (dims.n_layer, dims.n_head_kv, dims.key_length) == (
        tiny.n_layer, tiny.n_head_kv, tiny.head_dim)
    assert dims.n_vocab == 156_940
    # The 3B constants the budget assumes are the fixture's 3B shape (Llama-3.2-3B's).
    big = SHAPES["3b"]
    assert (ORPHEUS_3B.n_layer, ORPHEUS_3B.n_embd, ORPHEUS_3B.n_head, ORPHEUS_3B.n_head_kv) == (
        big.n_layer, big.n_embd, big.n_head, big.n_head_kv)
    assert ORPHEUS_3B.kv_bytes_per_token() == 112 * 1024


def test_a_header_that_is_not_a_language_model_has_no_dimensions(tmp_path: Path) -> None:
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + bytes(16))
    assert read_dims(empty) is None
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + bytes(8) + b"\x01" + bytes(3))
    with pytest.raises(InputError, match="damaged GGUF header"):
        read_dims(broken)


def l4(**changes: object) -> Settings:
    return Settings(project="p-123456", **changes)  # type: ignore[arg-type]


def q8(name: str) -> ModelEntry:
    return ModelEntry(name=name, object=f"{name}.gguf", voices=(name,), size=Q8_3B,
                      dims=ORPHEUS_3B)


def test_three_q8_models_fit_an_l4_and_four_do_not() -> None:
    three = [q8("a"), q8("b"), q8("c")]
    budget = memory_budget(l4(models_max=3), three)
    # 3.26 GiB weights + 1.75 GiB KV (16384 cells x 112 KiB) + 1.0 GiB allowance, three times.
    assert budget.fits and budget.checked
    assert budget.need == 3 * (Q8_3B + 16384 * 112 * 1024 + GIB)
    assert "18.03 GiB of 22.50 GiB usable on nvidia-l4" in budget.summary()

    four = memory_budget(l4(models_max=4), [*three, q8("d")])
    assert not four.fits and four.most_that_fit() == 3
    with pytest.raises(ConfigError) as refused:
        four.check()
    assert "24.04 GiB of 22.50 GiB" in refused.value.message
    assert "models_max = 3" in (refused.value.hint or "")
    # With models_max 3 the fourth loads on demand: the worst case is three resident.
    memory_budget(l4(models_max=3), [*three, q8("d")]).check()


def test_the_kv_cache_grows_with_n_ctx_and_unknown_sizes_are_not_guessed() -> None:
    small, large = (memory_budget(l4(n_ctx=n), [q8("a")]) for n in (4096, 65536))
    assert large.need - small.need == (65536 - 4096) * ORPHEUS_3B.kv_bytes_per_token()
    unsized = memory_budget(l4(), [dataclasses.replace(q8("a"), size=None)])
    assert not unsized.checked and "no size recorded for a" in unsized.summary()
    other_gpu = memory_budget(l4(gpu_type="nvidia-h100"), [q8("a")])
    assert not other_gpu.checked and "set gpu_memory_gib" in other_gpu.summary()
    assert memory_budget(l4(gpu_type="nvidia-h100", gpu_memory_gib=80.0), [q8("a")]).checked
