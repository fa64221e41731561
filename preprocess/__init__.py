"""Stage 1: validate the user's raw data against the schema and write chat-format train/eval JSONL."""
