"""Reach the Hugging Face Hub once, fast. Without a network, `datasets` and `transformers`
retry every request with back-off (about 25 s, and a traceback a retry) before they fail.
A step that needs the hub calls `use_hub_or_cache()` first: one request with a short timeout;
when the hub cannot be reached (or HF_HUB_OFFLINE is set), this process is put in the
libraries' offline mode, so they read the local cache and fail at once if it lacks the files.

Call it before importing huggingface_hub, datasets or transformers: they read the offline
variables when imported (modules already imported are switched too, as far as they allow).
"""

import os
import sys
from typing import Optional

DEFAULT_ENDPOINT = "https://huggingface.co"
TIMEOUT_S = 4.0
OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
TRUE = {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading of these variables


def offline_requested() -> Optional[str]:
    """The offline variable that is set, if any."""
    for name in OFFLINE_VARS:
        if os.environ.get(name, "").strip().upper() in TRUE:
            return name
    return None


def first_line(err: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}".strip()


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def innermost(err: BaseException) -> str:
    """The root cause of a requests/urllib3 error, in one short line."""
    while True:
        reason = getattr(err, "reason", None)
        nested = reason if isinstance(reason, BaseException) else None
        if nested is None and err.args and isinstance(err.args[0], BaseException):
            nested = err.args[0]
        if nested is None or nested is err:
            break
        err = nested
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return (
        text.split("): ", 1)[-1]
        if text.startswith(("HTTPConnection(", "HTTPSConnection("))
        else text
    )


def unreachable(timeout: float = TIMEOUT_S) -> Optional[str]:
    """None when the hub answers (any HTTP status will do), else why it cannot be reached.
    Goes through requests, so HTTPS_PROXY and the like apply."""
    import requests

    try:
        requests.head(endpoint(), timeout=timeout, allow_redirects=False)
    except requests.RequestException as err:
        return f"{endpoint()} cannot be reached: {innermost(err)}"
    return None


def go_offline() -> None:
    """Put this process (and the processes it starts) in the libraries' offline mode."""
    for name in OFFLINE_VARS:
        os.environ[name] = "1"
    for module, attr in (
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
        ("datasets.config", "HF_DATASETS_OFFLINE"),
        ("transformers.utils.hub", "_is_offline_mode"),
    ):
        loaded = sys.modules.get(module)
        if loaded is not None and hasattr(loaded, attr):
            setattr(loaded, attr, True)


def use_hub_or_cache() -> Optional[str]:
    """None when the hub can be used; else why not, after switching to the local cache."""
    var = offline_requested()
    if var:
        go_offline()
        return f"{var} is set"
    reason = unreachable()
    if reason:
        go_offline()
    return reason
