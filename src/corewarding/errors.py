"""Errors that reach the user as one clear line instead of a traceback."""


class CorewardingError(Exception):
    """A problem with the user's input (file, field, value) that the CLI prints without a traceback."""


class DataError(CorewardingError):
    """A data file is missing, malformed, or has a field of the wrong type."""


class ConfigError(CorewardingError):
    """A config key is unknown, mistyped, or inconsistent with another."""


class HubError(CorewardingError):
    """The Hugging Face Hub refused or failed an upload (token, permissions, repository, network)."""
