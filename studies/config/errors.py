"""ConfigError: what every validator raises for invalid user configuration.

The REST API turns it into a 400 naming the field, the forms put it beside
their input, the CLI prints it on one line.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Invalid user configuration; ``field`` names where, the message says why.

    A validator that finds several independent mistakes raises them at once with
    ``ConfigError.combine``; ``errors`` lists them (just this one otherwise).
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.errors: list[ConfigError] = [self]

    @classmethod
    def combine(cls, errors: list[ConfigError]) -> ConfigError:
        flat = [one for error in errors for one in error.errors]
        combined = cls(flat[0].field, flat[0].message)
        combined.errors = flat
        return combined
