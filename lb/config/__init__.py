"""The config: its schema (`schema`, with one module per section: `listeners`, `routes`,
`pools`, `tls`, `cache`, `queues`, `redis`), loading YAML with line-numbered problems (`load`)
and the cross-field checks (`validate`, with `*_checks` per section), reported as `problems`."""

from lb.config.load import load_config, load_config_text, summarize
from lb.config.problems import ConfigError, Problem
from lb.config.schema import Config
from lb.config.validate import validate

__all__ = [
    "Config",
    "ConfigError",
    "Problem",
    "load_config",
    "load_config_text",
    "summarize",
    "validate",
]
