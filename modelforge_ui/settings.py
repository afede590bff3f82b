"""Server settings: flags override environment variables, which override the defaults.

  MODELFORGE_HOST, MODELFORGE_PORT          where to listen (default 127.0.0.1:8000)
  MODELFORGE_TOKEN                          bearer token; required to listen beyond loopback
  MODELFORGE_HOME                           the data directory (runs, uploads, the run database)
  MODELFORGE_ALLOWED_ROOTS                  extra directories data sets and models are read from
                                            (separated by ':' on Linux/macOS, ';' on Windows)
  MODELFORGE_MAX_UPLOAD_MB                  size limit of one uploaded data set (default 512)
  MODELFORGE_ALLOW_TRUST_REMOTE_CODE        1 lets configs set trust_remote_code (default off)
  MODELFORGE_WORKER_MEMORY_GB               cap each worker's data memory (Linux; default none)
  MODELFORGE_JOBS_PER_DEVICE                jobs run at once on each GPU (or the CPU), default 1
  MODELFORGE_ALLOWED_HOSTS                  more names the server answers to (Host and Origin),
                                            comma-separated, e.g. a reverse proxy's
  SPACE_HOST                                set by Hugging Face Spaces: the Space's own names
  MODELFORGE_FORWARDED_ALLOW_IPS            proxies (addresses or networks, comma-separated)
                                            whose X-Forwarded-For/-Proto are trusted (default
                                            none)
  MODELFORGE_CONCURRENT_PER_KIND            expensive requests of one kind (preview, config
                                            check, doctor refresh, zip) run at once (default 2)
  MODELFORGE_HELPER_MEMORY_GB,              read where they apply (trainers/runs/process.py,
  MODELFORGE_DATA_MAX_ROWS/_COLUMNS/_MB     trainers/data.py); see docs/security.md

Importing this module is cheap: no torch, no gradio.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping

from trainers.errors import ModelForgeError
from trainers.runs.process import default_data_dir

MIN_TOKEN_LENGTH = 16
TOKEN_HINT = ("Generate one with: python -c \"import secrets; print(secrets.token_urlsafe(32))\" "
              "and pass it as MODELFORGE_TOKEN (or --token).")


class SettingsError(ModelForgeError):
    error_type = "settings"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = field(default=None, repr=False)  # never printed in logs
    data_dir: Path = field(default_factory=default_data_dir)
    allowed_roots: tuple[Path, ...] = ()
    # Names besides loopback, IP addresses and `host` that requests may address (http_guard.py).
    allowed_hosts: tuple[str, ...] = ()
    max_upload_mb: float = 512.0
    allow_trust_remote_code: bool = False
    worker_memory_gb: float | None = None
    jobs_per_device: int = 1
    # Proxies whose X-Forwarded-For / -Proto name the client (uvicorn's forwarded_allow_ips):
    # from anyone else those headers are ignored, so a client cannot forge its address.
    forwarded_allow_ips: tuple[str, ...] = ()
    # How many requests of each expensive kind run at once; more get 429 (api/busy.py).
    concurrent_per_kind: int = 2
    demo: bool = False
    dashboard: bool = True
    # Look but do not touch: no token needed, nothing can be started or changed (app.py on a
    # public Space without MODELFORGE_TOKEN); enforced by modelforge_ui/read_only.py.
    read_only: bool = False

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides) -> "Settings":
        """Defaults, then MODELFORGE_* variables, then the non-None `overrides` (flags)."""
        env = os.environ if env is None else env
        values: dict = {}
        if env.get("MODELFORGE_HOST"):
            values["host"] = env["MODELFORGE_HOST"]
        if env.get("MODELFORGE_PORT"):
            values["port"] = _int(env["MODELFORGE_PORT"], "MODELFORGE_PORT")
        if env.get("MODELFORGE_TOKEN"):
            values["token"] = env["MODELFORGE_TOKEN"]
        if env.get("MODELFORGE_HOME"):
            values["data_dir"] = Path(env["MODELFORGE_HOME"]).expanduser()
        if env.get("MODELFORGE_ALLOWED_ROOTS"):
            values["allowed_roots"] = tuple(
                Path(p).expanduser() for p in env["MODELFORGE_ALLOWED_ROOTS"].split(os.pathsep) if p)
        hosts = f"{env.get('MODELFORGE_ALLOWED_HOSTS', '')},{env.get('SPACE_HOST', '')}"
        if hosts.strip(","):
            values["allowed_hosts"] = tuple(hosts.split(","))
        if env.get("MODELFORGE_MAX_UPLOAD_MB"):
            values["max_upload_mb"] = _float(env["MODELFORGE_MAX_UPLOAD_MB"],
                                             "MODELFORGE_MAX_UPLOAD_MB")
        if env.get("MODELFORGE_ALLOW_TRUST_REMOTE_CODE"):
            values["allow_trust_remote_code"] = _bool(env["MODELFORGE_ALLOW_TRUST_REMOTE_CODE"],
                                                      "MODELFORGE_ALLOW_TRUST_REMOTE_CODE")
        if env.get("MODELFORGE_WORKER_MEMORY_GB"):
            values["worker_memory_gb"] = _float(env["MODELFORGE_WORKER_MEMORY_GB"],
                                                "MODELFORGE_WORKER_MEMORY_GB")
        if env.get("MODELFORGE_JOBS_PER_DEVICE"):
            values["jobs_per_device"] = _int(env["MODELFORGE_JOBS_PER_DEVICE"],
                                             "MODELFORGE_JOBS_PER_DEVICE")
        if env.get("MODELFORGE_FORWARDED_ALLOW_IPS"):
            values["forwarded_allow_ips"] = tuple(env["MODELFORGE_FORWARDED_ALLOW_IPS"].split(","))
        if env.get("MODELFORGE_CONCURRENT_PER_KIND"):
            values["concurrent_per_kind"] = _int(env["MODELFORGE_CONCURRENT_PER_KIND"],
                                                 "MODELFORGE_CONCURRENT_PER_KIND")
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def __post_init__(self) -> None:
        # Accept strings for paths (flags, tests); the dataclass is frozen, hence __setattr__.
        object.__setattr__(self, "data_dir", Path(self.data_dir).expanduser())
        object.__setattr__(self, "allowed_roots",
                           tuple(Path(p).expanduser() for p in self.allowed_roots))
        object.__setattr__(self, "allowed_hosts",
                           tuple(h for h in map(host_name, self.allowed_hosts) if h))
        object.__setattr__(self, "forwarded_allow_ips",
                           tuple(p.strip() for p in self.forwarded_allow_ips if p.strip()))
        self._check()

    def _check(self) -> None:
        """Raise SettingsError for a setting that cannot work or is unsafe."""
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"Port {self.port} is out of range.", "Use a port from 1 to 65535.")
        if self.token is not None and len(self.token) < MIN_TOKEN_LENGTH:
            raise SettingsError(
                f"The token is {len(self.token)} characters long; at least {MIN_TOKEN_LENGTH} "
                "are required.", TOKEN_HINT)
        if not is_loopback(self.host) and not self.token and not self.read_only:
            raise SettingsError(
                f"Refusing to listen on {self.host} without a token: anyone who can reach this "
                "machine could start jobs and read files.",
                "Set MODELFORGE_TOKEN (or --token), or listen on 127.0.0.1 only. " + TOKEN_HINT)
        for root in self.allowed_roots:
            if not root.is_dir():
                raise SettingsError(f"Allowed root {root} is not an existing directory.",
                                    "Create it, or remove it from --allowed-root / "
                                    "MODELFORGE_ALLOWED_ROOTS.")
        if self.max_upload_mb <= 0:
            raise SettingsError("max_upload_mb must be greater than 0.", "Use e.g. 512.")
        if self.worker_memory_gb is not None and self.worker_memory_gb <= 0:
            raise SettingsError("worker_memory_gb must be greater than 0.",
                                "Leave it unset for no limit, or give e.g. 16.")
        if self.worker_memory_gb is not None and not sys.platform.startswith("linux"):
            raise SettingsError("worker_memory_gb works on Linux only (it sets RLIMIT_DATA).",
                                "Leave it unset on this system.")
        if self.jobs_per_device < 1:
            raise SettingsError("jobs_per_device must be at least 1.", "Use 1 (the default).")
        if self.concurrent_per_kind < 1:
            raise SettingsError("concurrent_per_kind must be at least 1.", "Use 2 (the default).")
        for proxy in self.forwarded_allow_ips:
            if not is_network(proxy):
                raise SettingsError(
                    f"Forwarded-allow address {proxy!r} is not an IP address or network.",
                    "Name your reverse proxy's address, e.g. --forwarded-allow-ips 10.0.0.5 or "
                    "10.0.0.0/8 (MODELFORGE_FORWARDED_ALLOW_IPS).")

    # -- derived paths ----------------------------------------------------------------------
    @property
    def uploads_dir(self) -> Path:
        return self.data_dir / "datasets"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def outputs_dir(self) -> Path:
        return self.data_dir / "outputs"

    @property
    def demo_model_dir(self) -> Path:
        return self.models_dir / "demo"

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def worker_memory_bytes(self) -> int | None:
        return int(self.worker_memory_gb * 2**30) if self.worker_memory_gb else None

    def roots(self) -> list[Path]:
        """Every directory data sets, local models and output_dir may be under."""
        roots = [self.uploads_dir, self.models_dir, self.outputs_dir, *self.allowed_roots]
        if self.demo:
            from trainers.tools.demo import SAMPLE_DIR

            roots.append(SAMPLE_DIR)
        return roots

    def make_dirs(self) -> None:
        for path in (self.data_dir, self.uploads_dir, self.models_dir, self.outputs_dir):
            path.mkdir(parents=True, exist_ok=True)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def is_network(text: str) -> bool:
    """An IP address or network ("10.0.0.0/8"), as uvicorn's forwarded_allow_ips takes."""
    try:
        ipaddress.ip_network(text, strict=False)
        return True
    except ValueError:
        return False


def host_name(host: str) -> str:
    """The name part of a Host header or an Origin's host, lower-case, without the port or
    the brackets around an IPv6 address ("[::1]:8000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a whole number.", f"Set {name} to e.g. 8000.")


def _float(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise SettingsError(f"{name}={text!r} is not a number.", f"Set {name} to e.g. 512.")


def _bool(text: str, name: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={text!r} is not a yes/no value.", f"Set {name} to 1 or 0.")
