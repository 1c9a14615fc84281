"""Whether the Hugging Face hub can be used now, asked once and quickly.

``datasets`` and ``transformers`` retry a hub that does not answer for half a minute or more
before failing with a connection traceback; the corpus and tokenizer steps ask here first and
fail at once with a message that says what to download instead.
"""

from __future__ import annotations

import os

HUB_TIMEOUT_S = 5.0  # one HEAD request to the hub's endpoint, no retries
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be used now (offline mode, or its endpoint does not answer), else None."""
    from huggingface_hub import constants

    for var in OFFLINE_VARIABLES:
        if _env_true(var):
            return f"{var} is set"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub.utils import get_session

    try:  # the client a download would use: its proxies and certificates
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure to get an answer means no hub
        return f"{constants.ENDPOINT} did not answer: {exc.__class__.__name__}: {exc}"
    return None
