"""tuneserve: a self-hosted fine-tuning service for open LLMs with an OpenAI-compatible API."""

__version__ = "0.1.0"
