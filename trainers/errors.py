"""Typed errors a user can cause. Each carries a plain message and the fix.

Every surface (CLI, REST API, dashboard, worker events) shows `message` and `hint` as they are,
so the same problem reads the same everywhere.
"""

from __future__ import annotations


class ModelForgeError(Exception):
    """Base class: `error_type` is a stable key, `message` says what is wrong, `hint` the fix."""

    error_type = "error"

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_dict(self) -> dict:
        return {"error_type": self.error_type, "message": self.message, "hint": self.hint}

    def __str__(self) -> str:
        return f"{self.message}\nFix: {self.hint}" if self.hint else self.message


class ConfigError(ModelForgeError):
    """One or more config fields are invalid; `problems` holds each one."""

    error_type = "config"

    def __init__(self, problems: list[dict]):
        self.problems = problems
        lines = [f"{p['field']}: {p['message']}" for p in problems]
        super().__init__("Invalid config:\n  " + "\n  ".join(lines), "")

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": self.problems}


class DataError(ModelForgeError):
    error_type = "data"


class ProviderError(ModelForgeError):
    """The chosen provider cannot run this model or on this platform."""

    error_type = "provider"


class UnslothMissingError(ProviderError):
    error_type = "unsloth_missing"


class UnsupportedPlatformError(ProviderError):
    error_type = "unsupported_platform"


class UnsupportedModelError(ProviderError):
    error_type = "unsupported_model"


class EnvironmentProblem(ModelForgeError):
    """The machine lacks something the config needs (CUDA for 4-bit, bitsandbytes...)."""

    error_type = "environment"


class PathNotAllowedError(ModelForgeError):
    error_type = "path_not_allowed"
