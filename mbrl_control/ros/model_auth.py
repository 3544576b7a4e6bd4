"""Authenticated model announcements on ``model_updates`` (sysid_node -> controller_node).

Threat model: anyone on the ROS domain can publish on ``model_updates`` (plain DDS has no
authentication). An announcement is therefore accepted by :class:`ModelUpdateGate` only if

- its ``version`` is a JSON integer (not a float, bool or string) that increases within the run;
- its ``path`` is not a built-in model name and resolves (symlinks followed) to a regular file
  inside the configured model directory (the sysid node's ``out_dir``);
- its ``sha256`` matches the file's content;
- its ``hmac`` is the HMAC-SHA256 of ``version``, ``path`` and ``sha256`` under the per-run shared
  secret (:func:`run_secret`): the environment variable ``MBRL_MODEL_SECRET`` if set, otherwise a
  random key file ``.model_updates.key`` (mode 0600) in the model directory, created by whichever
  node comes first. Only a process that can read that file (or the environment) can announce.

Someone who can write the model directory or read the key can already replace the models; that
is outside this guard. Transport security (encryption, access control per topic) is SROS2's job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

SECRET_ENV = "MBRL_MODEL_SECRET"
MODEL_DIR_ENV = "MBRL_MODEL_DIR"
KEY_FILE = ".model_updates.key"
BUILTIN_MODELS = frozenset({"kinematic", "dynamic", "semiparametric"})
MAX_VERSION = 2 ** 53
MAX_MODEL_BYTES = 512 * 1024 * 1024


class RejectedUpdate(ValueError):
    """An announcement that is not accepted; the message is the reason."""


def file_sha256(path: Path, max_bytes: int = MAX_MODEL_BYTES) -> str:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            size += len(chunk)
            if size > max_bytes:
                raise RejectedUpdate(f"model file larger than {max_bytes} bytes")
            digest.update(chunk)
    return digest.hexdigest()


def _message(version: int, path: str, sha256: str) -> bytes:
    return json.dumps([version, path, sha256], separators=(",", ":")).encode()


def sign(secret: bytes, version: int, path: str, sha256: str) -> str:
    """HMAC-SHA256 (hex) over the announcement's version, path and content hash."""
    return hmac.new(secret, _message(version, path, sha256), hashlib.sha256).hexdigest()


def announcement(secret: bytes, version: int, path: Path | str, **extra: Any) -> dict[str, Any]:
    """The JSON body sysid_node publishes: ``version``, ``path``, ``sha256``, ``hmac`` and ``extra``."""
    path = str(path)
    digest = file_sha256(Path(path))
    return {"version": version, "path": path, "sha256": digest, "hmac": sign(secret, version, path, digest), **extra}


def resolve_model_dir(configured: str) -> Path | None:
    """The configured folder, else ``$MBRL_MODEL_DIR``, else None."""
    text = configured or os.environ.get(MODEL_DIR_ENV, "")
    return Path(text) if text else None


def run_secret(model_dir: Path) -> bytes:
    """The per-run shared secret: ``$MBRL_MODEL_SECRET``, else the key file in ``model_dir`` (created if absent)."""
    env = os.environ.get(SECRET_ENV, "")
    if env:
        return env.encode()
    model_dir.mkdir(parents=True, exist_ok=True)
    key_path = model_dir / KEY_FILE
    if not key_path.exists():
        fd, tmp = tempfile.mkstemp(prefix=".key_", dir=model_dir)  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(tmp, key_path)  # atomic, never replaces: the first node's key wins
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = key_path.read_text().strip()
    if len(key) < 32:
        raise OSError(f"{key_path}: key too short")
    return key.encode()


class ModelUpdateGate:
    """Checks announcements (see the module docstring); ``version`` is the last accepted one."""

    def __init__(self, model_dir: Path | None, secret: bytes | None) -> None:
        self.model_dir = None if model_dir is None else Path(model_dir).resolve()
        self.secret = secret
        self.version = 0
        self.rejected = 0
        self.last_reason = ""

    def check(self, data: str) -> tuple[int, Path]:
        """(version, resolved file) of an acceptable announcement; :class:`RejectedUpdate` otherwise.

        Never raises anything else. Does not consume the version: call :meth:`accept` once loaded.
        """
        try:
            return self._check(data)
        except RejectedUpdate as exc:
            self.rejected += 1
            self.last_reason = str(exc)
            raise
        except Exception as exc:  # noqa: BLE001 - any odd input is a rejection, never a crash
            self.rejected += 1
            self.last_reason = f"malformed announcement ({type(exc).__name__}: {exc})"
            raise RejectedUpdate(self.last_reason) from None

    def accept(self, version: int) -> None:
        self.version = max(self.version, version)

    def reject(self, reason: str) -> None:
        """Count a rejection found later (the file did not load)."""
        self.rejected += 1
        self.last_reason = reason

    def _check(self, data: str) -> tuple[int, Path]:
        if self.model_dir is None or self.secret is None:
            raise RejectedUpdate("no model directory configured (model_dir / $MBRL_MODEL_DIR): updates are refused")
        if len(data) > 65536:
            raise RejectedUpdate("announcement too long")
        try:
            info = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise RejectedUpdate(f"not JSON ({exc})") from None
        if not isinstance(info, dict):
            raise RejectedUpdate("not a JSON object")
        version, path, digest, mac = (info.get(k) for k in ("version", "path", "sha256", "hmac"))
        if type(version) is not int:
            raise RejectedUpdate(f"version must be an integer, got {type(version).__name__} {version!r:.40}")
        if not 0 < version < MAX_VERSION:
            raise RejectedUpdate(f"version {version} out of range")
        if version <= self.version:
            raise RejectedUpdate(f"version {version} not newer than the current {self.version}")
        if not isinstance(path, str) or not path:
            raise RejectedUpdate("path must be a non-empty string")
        if path in BUILTIN_MODELS or path.strip().lower() in BUILTIN_MODELS:
            raise RejectedUpdate(f"built-in model name '{path}' is not an update")
        if not isinstance(digest, str) or len(digest) != 64:
            raise RejectedUpdate("missing or malformed sha256")
        if not isinstance(mac, str) or not hmac.compare_digest(mac.encode(), sign(self.secret, version, path, digest).encode()):
            raise RejectedUpdate("bad or missing hmac (not from this run's sysid node)")
        candidate = Path(path)
        if not candidate.is_absolute():
            raise RejectedUpdate("path must be absolute")
        try:
            resolved = candidate.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise RejectedUpdate(f"path does not exist ({exc})") from None
        if not resolved.is_relative_to(self.model_dir):
            raise RejectedUpdate(f"path {resolved} is outside the model directory {self.model_dir}")
        if not resolved.is_file():
            raise RejectedUpdate(f"path {resolved} is not a regular file")
        try:
            actual = file_sha256(resolved)
        except OSError as exc:
            raise RejectedUpdate(f"cannot read the file ({exc})") from None
        if not hmac.compare_digest(actual, digest.lower()):
            raise RejectedUpdate("file content does not match its sha256")
        return version, resolved
