"""A random-weight model with google/gemma-3-27b-it's exact geometry, at reduced text depth, to measure the
27B recipe's memory and speed without downloading 54 GB. Memory grows linearly with depth (each layer adds
the same weights, adapters and checkpointed activations), so two depths give the per-layer slope and the
fixed part; 62 layers is the extrapolation.

    python -m bench.gemma27b_geometry --layers 4 --tokenizer models/gemma-3-270m --out models/g27-4
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from transformers import (
    AutoTokenizer,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessor,
    Gemma3TextConfig,
    SiglipVisionConfig,
)


def geometry(layers: int) -> Gemma3Config:
    """Public gemma-3-27b-it config; text depth reduced to `layers` (5 sliding : 1 global pattern kept)."""
    text = Gemma3TextConfig(
        hidden_size=5376, intermediate_size=21504, num_hidden_layers=layers, num_attention_heads=32,
        num_key_value_heads=16, head_dim=128, vocab_size=262208, sliding_window=1024, query_pre_attn_scalar=168,
        layer_types=["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(layers)],
        max_position_embeddings=131072,
    )
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                num_attention_heads=16, patch_size=14, image_size=896, vision_use_head=False)
    return Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=256,
                        boi_token_index=255999, eoi_token_index=256000, image_token_index=262144)


def matmul_params(layers: int) -> int:
    """Weights a text token is multiplied by: every layer's projections plus the (tied) output layer. The
    embedding lookup is not a matmul; the vision tower does not run on text."""
    text = geometry(layers).text_config
    h, hd, inter = text.hidden_size, text.head_dim, text.intermediate_size
    attention = h * hd * (2 * text.num_attention_heads + 2 * text.num_key_value_heads)  # q, o + k, v
    return layers * (attention + 3 * h * inter) + text.vocab_size * h


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--tokenizer", type=Path, required=True, help="any Gemma 3 tokenizer dir")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # initialise in bf16: fp32 would need twice the memory
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Gemma3ForConditionalGeneration(geometry(args.layers))
    model.save_pretrained(args.out)
    # The multimodal processor needs the image marker tokens named, as in the 27B checkpoint's tokenizer.
    AutoTokenizer.from_pretrained(args.tokenizer, extra_special_tokens={
        "boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>",
    }).save_pretrained(args.out)
    Gemma3ImageProcessor().save_pretrained(args.out)
    text = sum(p.numel() for n, p in model.named_parameters() if "language_model" in n)
    print(f"{args.out}: {args.layers} text layers, {text / 1e9:.2f} B text params")


if __name__ == "__main__":
    main()
