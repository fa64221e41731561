"""Stage 3: merge the LoRA adapter into the full-precision base and prove the merge is faithful."""
