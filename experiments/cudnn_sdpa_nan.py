"""Show pytorch/pytorch#196678 on this GPU: cuDNN's SDPA backward returns NaN grad_q for a masked batch whose
length is 64 mod 128, where the other backends are clean; and what the plugin decides here.

    python -m experiments.cudnn_sdpa_nan

The shapes: the upstream reproducer (1 head, head_dim 64) and Gemma 3 270M's attention (4 query heads,
1 KV head repeated, head_dim 256) at the lengths Axolotl pads to (multiples of 64).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from training.plugin import decide_cudnn_sdpa

BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "math": SDPBackend.MATH}


def grad_q_non_finite(backend: SDPBackend, heads: int, length: int, head_dim: int, seed: int = 0) -> int:
    """The upstream reproducer: every logit ~ -120, so each row's logsumexp is below ln(FLT_MAX)."""
    torch.manual_seed(seed)
    shape = (1, heads, length, head_dim)
    q = torch.randn(shape, device="cuda", dtype=torch.bfloat16) * 0.1
    k = torch.randn(shape, device="cuda", dtype=torch.bfloat16) * 0.1
    v = torch.randn(shape, device="cuda", dtype=torch.bfloat16)
    q[..., 0], k[..., 0] = 1.0, -120 * math.sqrt(head_dim)
    q.requires_grad_()
    mask = torch.ones(length, length, dtype=torch.bool, device="cuda").tril()[None, None]
    with sdpa_kernel([backend]):
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.backward(torch.randn_like(out))
    return int((~torch.isfinite(q.grad)).sum())


def main() -> None:
    capability, cudnn = torch.cuda.get_device_capability(), torch.backends.cudnn.version()
    device = f"{torch.cuda.get_device_name()} (sm_{capability[0]}{capability[1]})"
    print(f"torch {torch.__version__}, cuDNN {cudnn}, {device}")
    keep, why = decide_cudnn_sdpa("auto", capability, cudnn)
    print(f"plugin decision: cuDNN SDPA {'on' if keep else 'OFF'} ({why})")
    print("| shape | length | " + " | ".join(f"{b}: non-finite grad_q" for b in BACKENDS) + " |")
    print("|---|---|" + "---|" * len(BACKENDS))
    for label, heads, head_dim in (("upstream repro", 1, 64), ("Gemma 3 270M", 4, 256)):
        for length in (640, 704, 768, 832):
            cells = []
            for backend in BACKENDS.values():
                try:
                    cells.append(str(grad_q_non_finite(backend, heads, length, head_dim)))
                except RuntimeError as err:  # a backend that cannot serve the shape
                    cells.append(f"n/a ({str(err).splitlines()[0][:40]})")
            print(f"| {label} (heads {heads}, head_dim {head_dim}) | {length} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
