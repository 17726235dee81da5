"""What keeps the app local and its inputs sane: the address it binds, the password another address
needs, and the photos it accepts."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from dti.core.errors import DTIError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_UPLOAD_BYTES = 20 * 1024 * 1024  # a photo larger than this is not a phone photo
MAX_PHOTOS = 50


def check_host(host: str, auth: str | None) -> tuple[str, str] | None:
    """The (user, password) to require, or None on a local address. Any other address serves the
    workspace to the network, so it needs ``--auth user:password``."""
    host = host.strip()
    if not host:
        raise DTIError("--host is empty; leave it out to bind 127.0.0.1")
    credentials = parse_auth(auth) if auth is not None else None
    if host in LOCAL_HOSTS or _loopback(host):
        return credentials
    if credentials is None:
        raise DTIError(
            f"--host {host} would let other machines reach the workspace; add --auth user:password, "
            "or leave --host out to stay on 127.0.0.1"
        )
    return credentials


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(auth: str) -> tuple[str, str]:
    user, sep, password = auth.partition(":")
    if not sep or not user.strip() or not password:
        raise DTIError("--auth takes user:password, e.g. --auth me:a-long-password")
    if len(password) < 8:
        raise DTIError("--auth: the password is shorter than 8 characters; choose a longer one")
    return user, password


def check_port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise DTIError(f"--port {port} is not a port; use 1-65535, e.g. 7860")
    return port


def check_free(host: str, port: int) -> None:
    """Refuse a port another program serves on (or an address this machine does not have), before
    anything loads."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise DTIError(f"cannot serve on {host}:{port}: {exc.strerror or exc}; choose another --port") from None


def check_upload(path: str | os.PathLike) -> Path:
    """An uploaded photo: an image type dti reads, at most :data:`MAX_UPLOAD_BYTES`, and decodable."""
    from PIL import Image, UnidentifiedImageError

    from dti.training.data import IMAGE_EXTENSIONS

    path = Path(path)
    name = path.name
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise DTIError(f"{name} is not a photo dti reads; upload {', '.join(e.lstrip('.') for e in IMAGE_EXTENSIONS[:4])} files")
    size = path.stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise DTIError(f"{name} is {size / 2**20:.0f} MB; photos above {MAX_UPLOAD_BYTES // 2**20} MB are refused")
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise DTIError(f"{name} is not a readable image ({type(exc).__name__}); upload another file") from None
    return path
