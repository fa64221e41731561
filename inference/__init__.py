"""Shared mechanics of every stage that runs a model: loading it (full precision, or quantized where it would
not fit the GPU), greedy decoding with the training prompt, schema constraints, and the resumable store of
answers. Evaluation, prediction and the GGUF parity check all decode through here."""
