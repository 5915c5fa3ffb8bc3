"""Evaluation: does the fine-tuned model answer better than its base?

Owns: evaluation datasets (dataset.py), metrics (metrics.py: ROUGE, exact match, bootstrap
intervals), the LLM judge (judge.py), running models over a dataset through any OpenAI-compatible
endpoint (runner.py), reports (report.py: JSON and self-contained HTML), the `tuneserve eval`
command (cli.py), and evaluations as server jobs (service.py, worker.py). Does not own: generation
(inference/) or the HTTP routes (api/evaluations.py).
"""
