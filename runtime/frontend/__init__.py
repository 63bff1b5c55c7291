"""orpheus-frontend: the public, API-key-protected, OpenAI-compatible speech service.

Run it with ``python -m runtime.frontend`` (the container's CMD); build the app in code with
``runtime.frontend.app.create_app(settings)``.

HTTP API
    POST /v1/audio/speech   {model, input, voice, response_format, speed, stream,
                            stream_format} -> audio, or OpenAI's events with "sse"
    WS   /v1/audio/speech/stream   text in as it is written, audio out (speech_socket.py)
    GET  /v1/audio/voices   GET /v1/audio/capabilities (formats, input limit, speed range)
    GET  /v1/models         GET /openapi.json
    GET  /health (the only API route without a key)
    GET  /playground        the browser playground (static, no key; GET / redirects there)
    Keys: ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Errors:
    ``{"error": {"message", "type", "param", "code"}}``. The key is checked before a /v1 body is
    read; bodies over max(1 MiB, 12 x ORPHEUS_MAX_INPUT_CHARS + 64 KiB) get 413. The status line
    is sent only once the first audio is decoded, so a failed backend gives 502/503/504, never a
    200 with no audio; a failure after that truncates the chunked stream (and is logged with the
    request id).

Environment (design section 3 names first; the rest are optional tuning)
    PORT                            listen port (Cloud Run sets it)                     5005
    ORPHEUS_API_URL                 backend completions URL {backend}/v1/completions    http://127.0.0.1:1234/v1/completions
    ORPHEUS_BACKEND_AUTH            none | google-id-token (audience = backend origin)  none
    API_KEY_SECRET                  the API keys: a key, several comma-separated, or a
                                    key document (key_set.py); read once
    API_KEY_FILE                    instead: a file holding them (Cloud Run mounts the key
                                    secret there), re-read while the app runs
    ORPHEUS_API_KEY_REFRESH_S       how stale the keys read from API_KEY_FILE may get       30
    ORPHEUS_MODEL_NAME              model name sent to the backend and listed           orpheus
    ORPHEUS_TEMPERATURE, ORPHEUS_TOP_P, ORPHEUS_REPETITION_PENALTY: sampling, 0.6 / 0.9 / 1.1
    ORPHEUS_MAX_TOKENS              most tokens one backend request may generate (the   4096
                                    slot's room); each segment asks for what its text
                                    needs at a slow 5 chars/s, and text is split finer
                                    where that would not fit
    ORPHEUS_API_TIMEOUT             seconds to the first audio (retries included), and  120
                                    the longest silence tolerated mid-stream
    SNAC_MODEL_PATH                 required; the SNAC 24 kHz decoder in ONNX form
    ORPHEUS_MAX_INPUT_CHARS         longest accepted input                              4096
    ORPHEUS_SEGMENT_CHARS           long input is generated in pieces of at most this   240
    ORPHEUS_EXTRA_VOICES            comma-separated voices of a fine-tuned model        (none)
    ORPHEUS_MODELS                  several models: JSON list of {name, language,       (one model)
                                    voices, prompt, default}; the voice picks the model
                                    (catalog.py), whose name is sent to the backend's
                                    llama-server router
    ORPHEUS_DEFAULT_FORMAT          response_format when the request has none; mp3 as   mp3
                                    in OpenAI's API (wav, pcm, mp3, opus, flac, aac)
    ORPHEUS_DECODE_WORKERS          threads for decoding/encoding (shared by requests)  CPUs
    ORPHEUS_ONNX_THREADS            ONNX Runtime threads per decode call                1
    ORPHEUS_FAST_START              first audio after 14 tokens, its first 21 ms        true
                                    approximate (within 3% of RMS); false: after 21,
                                    all exact
    ORPHEUS_BACKEND_AUDIENCE        ID token audience if not the backend's origin       (origin)
    ORPHEUS_RETRY_INITIAL_BACKOFF / ORPHEUS_RETRY_MAX_BACKOFF   cold-start retries (s)   0.5 / 8
    ORPHEUS_LOG_LEVEL               log level of the JSON logs on stdout                INFO
    ORPHEUS_KEY_MAX_STREAMS         per key and instance: streams at once (0: none)     0
    ORPHEUS_KEY_REQUESTS_PER_MINUTE per key and instance: requests a minute (0: none)   0
    ORPHEUS_BACKEND_SLOTS           backend generations at once from this instance      4
    ORPHEUS_QUEUE_SIZE / ORPHEUS_QUEUE_TIMEOUT   waiting for a slot: how many, how long 16 / 30
    ORPHEUS_REQUEST_TIMEOUT         the platform's request timeout: WebSockets close    (none)
                                    cleanly 5 s before it
    ORPHEUS_HOST                    listen address                                      0.0.0.0

Neither API_KEY_SECRET nor API_KEY_FILE, an unreadable key file or a missing SNAC decoder stops
start-up with one line naming the variable (exit 2).
"""
