"""`python -m runtime.frontend`: the container's command. Serves on 0.0.0.0:$PORT.

Configuration errors (no API key, an unreadable key file, no SNAC decoder) end the process at once
with one clear line and exit status 2, so a bad deploy fails its startup probe with a readable
log.
"""

from __future__ import annotations

import logging
import sys

from runtime.frontend.key_set import KeySetError
from runtime.frontend.logging_setup import configure_logging, uvicorn_log_config
from runtime.frontend.settings import SettingsError, load_settings


def main() -> int:
    configure_logging()
    try:
        settings = load_settings()
    except SettingsError as exc:
        logging.getLogger("orpheus.frontend").critical(str(exc))
        return 2
    try:
        keys = settings.key_store()  # a key file that cannot be read stops start-up here
    except KeySetError as exc:
        logging.getLogger("orpheus.frontend").critical(f"cannot read API_KEY_FILE: {exc}")
        return 2
    configure_logging(settings.log_level)

    import uvicorn

    from runtime.frontend.app import create_app
    from runtime.frontend.serving import uvicorn_options

    uvicorn.run(
        create_app(settings, keys),
        host=settings.host,
        port=settings.port,
        log_config=uvicorn_log_config(settings.log_level),
        access_log=False,  # our access log has latency, time to first byte and audio seconds
        proxy_headers=True,
        forwarded_allow_ips="*",  # Cloud Run's front end is the only peer
        **uvicorn_options(settings),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
