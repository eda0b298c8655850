"""The config: its schema (`schema`), loading YAML with line-numbered problems (`load`) and the
cross-field checks (`validate`)."""

from lb.config.load import ConfigError, load_config, load_config_text, summarize
from lb.config.schema import Config
from lb.config.validate import Problem, validate

__all__ = [
    "Config",
    "ConfigError",
    "Problem",
    "load_config",
    "load_config_text",
    "summarize",
    "validate",
]
