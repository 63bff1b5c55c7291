"""Orpheus codec: prompt building, token parsing, SNAC decoding (ONNX Runtime), audio encoding.

Pure Python + numpy; onnxruntime and PyAV are imported only when a decoder or a compressed
encoder is created, and torch only by `runtime.codec.export_snac`.
"""

from runtime.codec.encoders import (
    CONTENT_TYPES,
    SUPPORTED_FORMATS,
    AudioEncoder,
    UnsupportedFormatError,
    open_encoder,
)
from runtime.codec.prompt import (
    UnknownVoiceError,
    build_text_prompt,
    build_token_prompt,
    validate_voice,
)
from runtime.codec.protocol import (
    AUDIO_BASE_ID,
    BOS_ID,
    EMOTION_TAGS,
    END_OF_AI_ID,
    END_OF_HUMAN_ID,
    END_OF_SPEECH_ID,
    EOT_ID,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
    START_OF_AI_ID,
    START_OF_HUMAN_ID,
    START_OF_SPEECH_ID,
    VOICES,
    Frame,
    frame_to_token_text,
)
from runtime.codec.snac_onnx import SnacOnnxDecoder
from runtime.codec.streaming import AudioStream, StreamingDecoder, to_int16
from runtime.codec.text_split import SegmentJoiner, crossfade_join, split_text
from runtime.codec.tokens import TokenStreamParser

__all__ = [
    "AUDIO_BASE_ID",
    "BOS_ID",
    "CONTENT_TYPES",
    "EMOTION_TAGS",
    "END_OF_AI_ID",
    "END_OF_HUMAN_ID",
    "END_OF_SPEECH_ID",
    "EOT_ID",
    "SAMPLES_PER_FRAME",
    "SAMPLE_RATE",
    "START_OF_AI_ID",
    "START_OF_HUMAN_ID",
    "START_OF_SPEECH_ID",
    "SUPPORTED_FORMATS",
    "VOICES",
    "AudioEncoder",
    "AudioStream",
    "Frame",
    "SegmentJoiner",
    "SnacOnnxDecoder",
    "StreamingDecoder",
    "TokenStreamParser",
    "UnknownVoiceError",
    "UnsupportedFormatError",
    "build_text_prompt",
    "build_token_prompt",
    "crossfade_join",
    "frame_to_token_text",
    "open_encoder",
    "split_text",
    "to_int16",
    "validate_voice",
]
