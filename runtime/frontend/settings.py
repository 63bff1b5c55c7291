"""The frontend's configuration, read once from the environment (design section 3).

Every name below is the environment variable itself, because the CLI's Cloud Run service spec sets
exactly these names; see `runtime.frontend` for the table with defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.codec.encoders import SUPPORTED_FORMATS
from runtime.frontend.catalog import CatalogError, ModelCatalog
from runtime.frontend.key_set import KeySet, KeySetError
from runtime.frontend.key_store import KeyStore, read_key_file

__all__ = ["Settings", "SettingsError", "load_settings"]


def _env(name: str) -> AliasChoices:
    # The environment name; `populate_by_name` also accepts the field name in code.
    return AliasChoices(name)


class SettingsError(RuntimeError):
    """Configuration that cannot serve requests; the message names the variable to fix."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        populate_by_name=True, extra="ignore", case_sensitive=True, frozen=True
    )

    port: int = Field(5005, ge=1, le=65535, validation_alias=_env("PORT"))
    host: str = Field("0.0.0.0", validation_alias=_env("ORPHEUS_HOST"))

    api_url: str = Field(
        "http://127.0.0.1:1234/v1/completions", validation_alias=_env("ORPHEUS_API_URL")
    )
    backend_auth: Literal["none", "google-id-token"] = Field(
        "none", validation_alias=_env("ORPHEUS_BACKEND_AUTH")
    )
    # Defaults to the origin of ORPHEUS_API_URL, which is what Cloud Run checks an ID token against.
    backend_audience: str | None = Field(None, validation_alias=_env("ORPHEUS_BACKEND_AUDIENCE"))
    # One of the two is required: the frontend is public, so running without a key would expose
    # the GPU to anyone. API_KEY_SECRET holds the keys (read once); API_KEY_FILE names a file
    # holding them (Cloud Run's secret volume), re-read every ORPHEUS_API_KEY_REFRESH_S
    # (key_store.py).
    api_key_secret: SecretStr | None = Field(None, validation_alias=_env("API_KEY_SECRET"))
    api_key_file: Path | None = Field(None, validation_alias=_env("API_KEY_FILE"))
    api_key_refresh_s: float = Field(30.0, gt=0.0, le=3600.0,
                                     validation_alias=_env("ORPHEUS_API_KEY_REFRESH_S"))

    model_name: str = Field("orpheus", validation_alias=_env("ORPHEUS_MODEL_NAME"))
    temperature: float = Field(0.6, ge=0.0, le=2.0, validation_alias=_env("ORPHEUS_TEMPERATURE"))
    top_p: float = Field(0.9, gt=0.0, le=1.0, validation_alias=_env("ORPHEUS_TOP_P"))
    repetition_penalty: float = Field(
        1.1, gt=0.0, le=3.0, validation_alias=_env("ORPHEUS_REPETITION_PENALTY")
    )
    max_tokens: int = Field(4096, ge=7, validation_alias=_env("ORPHEUS_MAX_TOKENS"))
    api_timeout: float = Field(120.0, gt=0.0, validation_alias=_env("ORPHEUS_API_TIMEOUT"))

    snac_model_path: Path = Field(validation_alias=_env("SNAC_MODEL_PATH"))

    max_input_chars: int = Field(4096, ge=1, validation_alias=_env("ORPHEUS_MAX_INPUT_CHARS"))
    segment_chars: int = Field(240, ge=20, validation_alias=_env("ORPHEUS_SEGMENT_CHARS"))
    extra_voices: str = Field("", validation_alias=_env("ORPHEUS_EXTRA_VOICES"))
    # Several models (runtime/frontend/catalog.py): the voice -> model map, as JSON.
    models_json: str = Field("", validation_alias=_env("ORPHEUS_MODELS"))
    default_format: str = Field("mp3", validation_alias=_env("ORPHEUS_DEFAULT_FORMAT"))
    # None: one per usable CPU (see decode_pool.py for why not more).
    decode_workers: int | None = Field(
        None, ge=1, le=64, validation_alias=_env("ORPHEUS_DECODE_WORKERS")
    )
    onnx_threads: int = Field(1, ge=1, le=64, validation_alias=_env("ORPHEUS_ONNX_THREADS"))
    # First audio after 2 frames (14 tokens), its first 21 ms approximate, instead of 3 frames
    # (21 tokens) all exact (runtime/codec/streaming.py).
    fast_start: bool = Field(True, validation_alias=_env("ORPHEUS_FAST_START"))
    retry_initial_backoff: float = Field(
        0.5, gt=0.0, validation_alias=_env("ORPHEUS_RETRY_INITIAL_BACKOFF")
    )
    retry_max_backoff: float = Field(
        8.0, gt=0.0, validation_alias=_env("ORPHEUS_RETRY_MAX_BACKOFF")
    )
    log_level: str = Field("INFO", validation_alias=_env("ORPHEUS_LOG_LEVEL"))
    # Fair use (limits.py). Per key and per instance; 0 (the default) turns a limit off: with the
    # one key a deployment starts with, every caller is the same caller.
    key_max_streams: int = Field(0, ge=0, validation_alias=_env("ORPHEUS_KEY_MAX_STREAMS"))
    key_requests_per_minute: int = Field(
        0, ge=0, validation_alias=_env("ORPHEUS_KEY_REQUESTS_PER_MINUTE")
    )
    # Backend generations at once from this instance (N_PARALLEL x backend max instances; 0: no
    # limit), and the queue in front of them.
    backend_slots: int = Field(4, ge=0, validation_alias=_env("ORPHEUS_BACKEND_SLOTS"))
    queue_size: int = Field(16, ge=0, validation_alias=_env("ORPHEUS_QUEUE_SIZE"))
    queue_timeout: float = Field(30.0, gt=0.0, validation_alias=_env("ORPHEUS_QUEUE_TIMEOUT"))
    # The platform's request timeout (Cloud Run's, set by the deploy): a WebSocket closes itself
    # cleanly just before it (speech_socket.py). None: no limit.
    request_timeout: float | None = Field(
        None, gt=0.0, validation_alias=_env("ORPHEUS_REQUEST_TIMEOUT")
    )

    @field_validator("api_key_secret")
    @classmethod
    def _has_a_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        try:
            keys = KeySet.parse(value.get_secret_value()).named_keys()
        except KeySetError as exc:  # the message never quotes the value
            raise ValueError(str(exc)) from None
        if not keys:
            raise ValueError("holds no key (expected one key, several separated by commas, or "
                             "a key document)")
        return value

    @field_validator("api_key_file")
    @classmethod
    def _key_file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no key file at {value}")
        return value

    @model_validator(mode="after")
    def _one_key_source(self) -> Settings:
        if self.api_key_secret is None and self.api_key_file is None:
            raise ValueError("API_KEY_SECRET is not set (nor API_KEY_FILE, a file holding the "
                             "keys)")
        if self.api_key_secret is not None and self.api_key_file is not None:
            raise ValueError("set only one of API_KEY_SECRET and API_KEY_FILE")
        return self

    @field_validator("snac_model_path")
    @classmethod
    def _decoder_exists(cls, value: Path) -> Path:
        if not value.is_file():
            raise ValueError(f"no SNAC ONNX decoder at {value}")
        return value

    @field_validator("log_level")
    @classmethod
    def _is_log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ValueError(f"{value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @field_validator("default_format")
    @classmethod
    def _is_format(cls, value: str) -> str:
        fmt = value.strip().lower()
        if fmt not in SUPPORTED_FORMATS:
            raise ValueError(f"{value!r} is not one of {', '.join(SUPPORTED_FORMATS)}")
        return fmt

    @field_validator("api_url")
    @classmethod
    def _is_http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL such as https://host/v1/completions")
        return value

    @model_validator(mode="after")
    def _catalog_is_servable(self) -> Settings:
        try:
            self.catalog()
        except CatalogError as exc:
            raise ValueError(f"ORPHEUS_MODELS: {exc}") from None
        return self

    def catalog(self) -> ModelCatalog:
        """The models and which voice each speaks (one model unless ORPHEUS_MODELS is set)."""
        return ModelCatalog.build(self.models_json, self.model_name, self.voices_extra)

    @property
    def api_keys(self) -> tuple[tuple[str, bytes], ...]:
        """The accepted keys with their names, as bytes for hmac.compare_digest: from
        API_KEY_SECRET (a key document, or comma-separated keys named "default", "key-2", ...),
        else read from API_KEY_FILE now. Requests use the app's KeyStore, which re-reads the file
        while the app runs (key_store.py)."""
        if self.api_key_secret is not None:
            return KeySet.parse(self.api_key_secret.get_secret_value()).named_keys()
        assert self.api_key_file is not None
        return read_key_file(self.api_key_file)

    def key_store(self) -> KeyStore:
        """The app's source of keys for requests."""
        if self.api_key_file is not None:
            return KeyStore.from_file(self.api_key_file, self.api_key_refresh_s)
        return KeyStore(self.api_keys)

    @property
    def max_body_bytes(self) -> int:
        """Largest request body read: room for the longest input with every character escaped as
        a JSON surrogate pair (12 bytes), plus the other fields; at least 1 MiB."""
        return max(1 << 20, 12 * self.max_input_chars + (64 << 10))

    @property
    def voices_extra(self) -> tuple[str, ...]:
        return tuple(v.strip().lower() for v in self.extra_voices.split(",") if v.strip())

    @property
    def audience(self) -> str:
        if self.backend_audience:
            return self.backend_audience
        parts = urlsplit(self.api_url)
        return f"{parts.scheme}://{parts.netloc}"


def load_settings(**overrides: object) -> Settings:
    """Read the environment (overrides win) or raise SettingsError with one line per problem."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = str(err["loc"][0]) if err["loc"] else "?"
            field = Settings.model_fields.get(name)
            env = name
            if field is not None and isinstance(field.validation_alias, AliasChoices):
                env = str(field.validation_alias.choices[0])
            if not err["loc"]:  # a rule across fields: its message names them
                lines.append(str(err["msg"]).removeprefix("Value error, "))
            elif err["type"] == "missing":
                lines.append(f"{env} is not set")
            else:
                # Never echo the input: for API_KEY_SECRET it would be the key itself.
                lines.append(f"{env}: {err['msg']}")
        raise SettingsError("invalid frontend configuration: " + "; ".join(lines)) from None
