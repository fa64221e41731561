"""FLOPs of a training step of a Gemma 3 text model, for MFU: the matmul work a step must do, by part.

Per token (forward 2 FLOPs per weight, backward 4 with weight gradients, 2 without):
- the layers' projections (N_body weights): 6 x N_body if they train (full fine-tune), 4 x N_body if frozen
  (LoRA/QLoRA: only input gradients flow back through them); the adapters' own work is counted too;
- the output layer (vocabulary x hidden, tied to the embedding, frozen under LoRA): 4 x N_head at each
  position where it runs: every position, or only the labelled ones (`loss_positions_only`);
- attention scores and values: 4 x heads x head_dim x (positions attended) per layer, forward, x3 with backward.
The recomputed forward of gradient checkpointing is not useful work: it is left out (MFU, not HFU).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Geometry:
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    sliding_window: int | None

    @classmethod
    def of(cls, config: Any) -> Geometry:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        return cls(text.num_hidden_layers, text.hidden_size, text.num_attention_heads, text.num_key_value_heads,
                   text.head_dim, text.intermediate_size, text.vocab_size, getattr(text, "sliding_window", None))

    @property
    def body(self) -> int:
        """Weights of the layers' projections (q, k, v, o and the gated MLP)."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    @property
    def head(self) -> int:
        return self.vocab * self.hidden

    def lora(self, rank: int) -> int:
        """Adapter weights of rank r on every projection (all-linear)."""
        d, hd, h, k, i = self.hidden, self.head_dim, self.heads, self.kv_heads, self.intermediate
        shapes = [(d, h * hd), (d, k * hd), (d, k * hd), (h * hd, d), (d, i), (d, i), (i, d)]
        return self.layers * sum(rank * (a + b) for a, b in shapes)


def train_flops(geometry: Geometry, tokens: float, loss_tokens: float, seq_len: float, *, full_finetune: bool,
                lora_rank: int = 0, head_on_loss_only: bool) -> dict[str, float]:
    """FLOPs of training on `tokens` non-padding tokens of which `loss_tokens` carry a label, at mean length
    `seq_len`, by part."""
    attended = seq_len / 2 if not geometry.sliding_window else min(seq_len / 2, geometry.sliding_window)
    parts = {
        "body": (6 if full_finetune else 4) * geometry.body * tokens,
        "adapters": 6 * geometry.lora(lora_rank) * tokens,
        "output_layer": 4 * geometry.head * (loss_tokens if head_on_loss_only else tokens),
        "attention": 3 * 4 * geometry.layers * geometry.heads * geometry.head_dim * attended * tokens,
    }
    return {**parts, "total": sum(parts.values())}
