"""The Hugging Face hub, asked only when it can answer: a file comes from the local cache, else from
the hub; with no network the answer is one line at once, instead of a minute of retries.

``HF_HUB_OFFLINE=1`` says the machine is offline; otherwise the hub's host is tried once (a TCP
connection, :data:`CONNECT_TIMEOUT` seconds) before anything else asks it.
"""

from __future__ import annotations

import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from dti.core.errors import DTIError

CONNECT_TIMEOUT = 3.0  # seconds: a reachable hub answers a TCP connection in well under this


def offline() -> bool:
    """Whether huggingface_hub is told it is offline (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


@functools.cache
def reachable() -> bool:
    """Whether the hub's host accepts a connection (asked once per process)."""
    from huggingface_hub import constants

    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname or "huggingface.co", port), timeout=CONNECT_TIMEOUT):
            return True
    except OSError:
        return False


def online() -> bool:
    """Whether a download can be tried at all."""
    return not offline() and reachable()


def cached(repo_id: str, filename: str) -> Path | None:
    """The file from the local hub cache, or None."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def fetch(repo_id: str, filename: str, what: str, fix: str) -> Path:
    """``filename`` of hub repo ``repo_id``: from the cache, else downloaded; ``what`` names it in the
    one-line refusal (no network, no such repo), ``fix`` says what to do instead."""
    found = cached(repo_id, filename)
    if found is not None:
        return found
    if not online():
        why = "the machine is offline (HF_HUB_OFFLINE)" if offline() else "the hub cannot be reached (no network)"
        raise DTIError(f"{what} {repo_id!r} is not a local folder and not in the hub cache, and {why}; {fix}")
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(hf_hub_download(repo_id, filename))
    except (RepositoryNotFoundError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        raise DTIError(f"{what} {repo_id!r} could not be fetched from the hub ({type(exc).__name__}); check the name, or {fix}") from None
