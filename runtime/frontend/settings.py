"""The frontend's configuration, read once from the environment (design section 3).

Every name below is the environment variable itself, because the CLI's Cloud Run service spec sets
exactly these names; see `runtime.frontend` for the table with defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from runtime.codec.encoders import SUPPORTED_FORMATS

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
    # Required: the frontend is public, so running without a key would expose the GPU to anyone.
    api_key_secret: SecretStr = Field(validation_alias=_env("API_KEY_SECRET"))

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
    default_format: str = Field("mp3", validation_alias=_env("ORPHEUS_DEFAULT_FORMAT"))
    # None: one per usable CPU (see decode_pool.py for why not more).
    decode_workers: int | None = Field(
        None, ge=1, le=64, validation_alias=_env("ORPHEUS_DECODE_WORKERS")
    )
    onnx_threads: int = Field(1, ge=1, le=64, validation_alias=_env("ORPHEUS_ONNX_THREADS"))
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
    def _has_a_key(cls, value: SecretStr) -> SecretStr:
        if not any(k.strip() for k in value.get_secret_value().split(",")):
            raise ValueError("holds no key (expected one key, or several separated by commas)")
        return value

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

    @property
    def api_keys(self) -> tuple[tuple[str, bytes], ...]:
        """The accepted keys with their names, as bytes for hmac.compare_digest (several during a
        rotation): the first is "default", the others "key-2", "key-3", ..."""
        raw = [k.strip() for k in self.api_key_secret.get_secret_value().split(",") if k.strip()]
        return tuple(("default" if i == 0 else f"key-{i + 1}", k.encode())
                     for i, k in enumerate(raw))

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
            if err["type"] == "missing":
                lines.append(f"{env} is not set")
            else:
                # Never echo the input: for API_KEY_SECRET it would be the key itself.
                lines.append(f"{env}: {err['msg']}")
        raise SettingsError("invalid frontend configuration: " + "; ".join(lines)) from None
