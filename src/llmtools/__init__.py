"""llmtools: small Unix-style commands for the whole life of an LLM."""

__version__ = "0.1.0"
