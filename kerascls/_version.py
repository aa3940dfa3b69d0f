"""The package version, on its own so the exporter can stamp it without the package facade
(``pyproject.toml`` reads it from here too)."""

__version__ = "0.1.0"
