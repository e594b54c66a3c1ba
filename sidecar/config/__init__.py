"""Configuration: pydantic models mirroring the YAML, and the single loader."""

from sidecar.config.loader import (
    ConfigError,
    ConfigIssue,
    LoadedConfig,
    default_config_path,
    load_config,
    parse_text,
    register_cross_check,
)
from sidecar.config.models import SidecarConfig

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "LoadedConfig",
    "SidecarConfig",
    "default_config_path",
    "load_config",
    "parse_text",
    "register_cross_check",
]
