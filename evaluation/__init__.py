"""Stage 4: generate on held-out queries with the training prompt, score, and write a readable report."""
