"""Stage 3's streaming merge on tiny random Gemma 3 checkpoints saved in several shards: what it writes equals PEFT's
in-memory merge, its proof catches a wrong merge, and its memory is bounded by a shard, not the model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from contract.config import REPO_ROOT
from merge.streaming import AdapterMismatch, read_adapter, stream_merge

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def sharded_model(out: Path, hidden: int = 64, layers: int = 4, shard: str = "60KB") -> Path:
    torch.manual_seed(0)
    config = Gemma3TextConfig(vocab_size=256, hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                              head_dim=hidden // 2, sliding_window=64,
                              layer_types=["sliding_attention", "full_attention"] * (layers // 2))
    Gemma3ForCausalLM(config).save_pretrained(out, max_shard_size=shard)
    return out


def random_adapter(base: Path, out: Path) -> Path:
    """A LoRA adapter with random A and B (a trained one's B is not zero), saved as training saves it."""
    torch.manual_seed(1)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                           LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False))
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("streaming")
    base = sharded_model(root / "base")
    return base, random_adapter(base, root / "adapter")


def test_the_base_is_really_sharded(checkpoint) -> None:
    base, _ = checkpoint
    assert len(list(base.glob("model-*.safetensors"))) >= 4 and (base / "model.safetensors.index.json").exists()


def test_a_float32_streaming_merge_equals_peft_merge_and_unload_exactly(checkpoint, tmp_path) -> None:
    base, adapter = checkpoint
    proof = stream_merge(base, read_adapter(adapter), adapter, tmp_path, torch.float32, progress=lambda _: None)
    assert proof.passed and proof.matrices == 4 * len(TARGETS) and proof.delta_error < 1e-5
    ours = {}
    for shard in tmp_path.glob("*.safetensors"):
        ours.update(load_file(shard))
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), str(adapter))
    reference = peft.merge_and_unload().state_dict()
    assert set(ours) == set(reference) - {"lm_head.weight"}  # tied to the embedding, not stored
    assert all(torch.equal(ours[name], reference[name]) for name in ours)


def test_a_bfloat16_merge_is_the_float32_merge_rounded_once_and_says_what_rounding_costs(checkpoint, tmp_path) -> None:
    base, adapter = checkpoint
    proof = stream_merge(base, read_adapter(adapter), adapter, tmp_path, torch.bfloat16, progress=lambda _: None)
    exact = tmp_path / "fp32"
    exact.mkdir()
    stream_merge(base, read_adapter(adapter), adapter, exact, torch.float32, progress=lambda _: None)
    for shard in tmp_path.glob("*.safetensors"):
        rounded, reference = load_file(shard), load_file(exact / shard.name)
        assert all(torch.equal(rounded[k], reference[k].to(torch.bfloat16)) for k in rounded)
    assert proof.passed and proof.dtype == "bfloat16" and 0 < proof.delta_error < 1


def test_the_proof_fails_a_merge_that_dropped_one_matrix(checkpoint, tmp_path, monkeypatch) -> None:
    import merge.streaming as streaming

    base, adapter = checkpoint
    honest, calls = streaming.merged_weight, []

    def first_one_dropped(weight, lora, dtype):  # the first matrix written loses its adapter; the check is honest
        calls.append(1)
        return weight.to(dtype) if len(calls) == 1 else honest(weight, lora, dtype)

    monkeypatch.setattr(streaming, "merged_weight", first_one_dropped)
    proof = stream_merge(base, read_adapter(adapter), adapter, tmp_path, torch.float32, progress=lambda _: None)
    assert not proof.passed and proof.exact == proof.matrices - 1


def test_an_adapter_for_another_geometry_is_refused_before_anything_is_written(checkpoint, tmp_path) -> None:
    _, adapter = checkpoint
    wider = sharded_model(tmp_path / "wider", hidden=128, layers=2, shard="10MB")
    with pytest.raises(AdapterMismatch, match="does not fit this base model"):
        stream_merge(wider, read_adapter(adapter), adapter, tmp_path, torch.float32, progress=lambda _: None)
    assert not list(tmp_path.glob("*.safetensors"))


MEASURE = """
import json, sys, torch
from pathlib import Path
from merge.streaming import read_adapter, stream_merge
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
Path("/proc/self/clear_refs").write_text("5")  # the peak resident size starts again from the current one
before = status("VmRSS")
base, adapter, out = map(Path, sys.argv[1:4])
stream_merge(base, read_adapter(adapter), adapter, out, torch.float32, progress=lambda _: None)
print(json.dumps({"extra_peak_bytes": status("VmHWM") - before}))
"""


@pytest.mark.slow
def test_the_merge_holds_about_a_shard_in_memory_not_the_model(tmp_path) -> None:
    """A 570 MB model in 55 shards of ~12 MB: the merge's peak memory grows by a few shards and the first use of torch's
    kernels (~90 MB here, the same for a model a third the size), not by the model."""
    base = sharded_model(tmp_path / "base", hidden=512, layers=36, shard="12MB")
    adapter = random_adapter(base, tmp_path / "adapter")
    model_bytes = json.loads((base / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
    (tmp_path / "out").mkdir()
    result = subprocess.run([sys.executable, "-c", MEASURE, str(base), str(adapter), str(tmp_path / "out")],
                            capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    extra = json.loads(result.stdout.strip().splitlines()[-1])["extra_peak_bytes"]
    assert model_bytes > 500e6 and len(list(base.glob("*.safetensors"))) >= 40
    assert extra < model_bytes / 4, f"peak grew by {extra / 1e6:.0f} MB for a {model_bytes / 1e6:.0f} MB model"
