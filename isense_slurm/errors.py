"""Errors that end a command with one clear line instead of a traceback."""


class IsenseError(Exception):
    """A failure the user can act on; the message is printed as one line."""

    exit_code = 1


class UsageError(IsenseError):
    """Bad flags, bad config, bad input: exit 2 as usage errors do."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file is missing or invalid; the message names file and key."""


class SlurmError(IsenseError):
    """A Slurm command failed (controller down, refused submission, ...)."""
