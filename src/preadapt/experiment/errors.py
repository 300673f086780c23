"""The error of an invalid config, shared by the modules that read configs, presets and sweeps."""


class ConfigError(ValueError):
    """An invalid config, override or preset; the message is one line a user can act on."""
