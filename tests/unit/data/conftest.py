"""Data tests use the file writers and the sample data of tests/unit/conftest.py
(write_jsonl, write_json, write_bytes, sample_file)."""
