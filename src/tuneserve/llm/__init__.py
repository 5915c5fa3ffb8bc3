"""Talking to an OpenAI-compatible LLM endpoint, as evaluation and synthesis both do.

endpoint.py: the `openai` client for a base URL, with retries and a key from the environment.
replies.py: reading what a model writes back (JSON in prose, Q&A pairs, YES/NO verdicts).
Shared by evaluation/ (the judge) and synthesis/ (generation and curation), so neither imports the other.
"""
