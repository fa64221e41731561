"""Release steps after evaluation: the model card, GGUF export for llama.cpp/Ollama, and the Hub upload."""
