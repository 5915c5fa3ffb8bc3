"""Synthetic Q&A training data from documents (`tuneserve data synthesize`).

documents.py: read PDF, Markdown and text, and chunk it in the model's tokens.
synthesize.py: the pipeline (generate, parse, curate, deduplicate, write chat JSONL), resumable.
rate_limit.py: requests and tokens per minute. cli.py: the command. prompts.yaml: the templates.
It writes what data/ validates, and talks to the model through llm/.
"""
