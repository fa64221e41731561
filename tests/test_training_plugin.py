"""The recipes' Axolotl plugin: a training run never goes on, nor ends "successfully", with NaN/inf; the cuDNN
attention backend is switched off exactly where its backward returns NaN (Hopper GPU + cuDNN < 9.26); and the
output layer run only at labelled positions gives the loss and gradients of the full computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from contract.state import NON_FINITE_REPORT
from tests.conftest import TINY_TRAINING, Project, make, write_project
from training.plugin import decide_cudnn_sdpa, loss_positions_forward, non_finite_values

CASES = [
    # setting, GPU capability, cuDNN version -> keep cuDNN SDPA on?
    ("auto", (9, 0), 91900, False),  # H100/H200 with cuDNN 9.19: the bug
    ("auto", (9, 0), 92501, False),  # the last release before the fix
    ("auto", (9, 0), 92600, True),  # cuDNN 9.26 carries the fix
    ("auto", (8, 0), 91900, True),  # A100: the failing kernel is sm90's
    ("auto", (8, 9), 91900, True),  # RTX 4090
    ("auto", None, None, True),  # CPU
    ("enable", (9, 0), 91900, True),
    ("disable", (8, 9), 92600, False),
]


@pytest.mark.parametrize(("setting", "capability", "cudnn", "keep"), CASES)
def test_cudnn_sdpa_is_switched_off_only_where_the_bug_applies(setting, capability, cudnn, keep) -> None:
    assert decide_cudnn_sdpa(setting, capability, cudnn)[0] is keep


def test_non_finite_logged_values_are_found_whatever_their_type() -> None:
    assert non_finite_values({"loss": "nan", "grad_norm": 1.5, "learning_rate": 0.1}).keys() == {"loss"}
    assert math.isinf(non_finite_values({"grad_norm": float("inf")})["grad_norm"])
    assert non_finite_values({"loss": 0.0, "grad_norm": "2.5", "epoch": 1}) == {}


@pytest.fixture(scope="module")
def nan_gemma3(tmp_path_factory, tiny_gemma3: Path) -> Path:
    """The tiny Gemma 3 with one NaN in its final norm: every loss and gradient is NaN from step 1."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3)
    with torch.no_grad():
        model.model.norm.weight[0] = float("nan")
    out = tmp_path_factory.mktemp("nan-gemma3")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(tiny_gemma3).save_pretrained(out)
    return out


@pytest.mark.axolotl
def test_make_train_stops_at_the_first_non_finite_step_and_saves_no_model(tmp_path, sample_records, nan_gemma3) -> None:
    no_eval = {**TINY_TRAINING, "eval_steps": None, "evals_per_epoch": 0}  # the training loss is what is checked
    project = Project(tmp_path, *write_project(tmp_path, sample_records[:64], nan_gemma3, overrides=no_eval))
    result = make("train", *project.make_args(), ok=False, timeout=1200)
    assert result.returncode != 0, (result.stdout + result.stderr)[-3000:]
    assert "error: training failed: training stopped at step 1: loss = nan" in result.stderr
    report = json.loads((project.output_dir / NON_FINITE_REPORT).read_text())
    assert report["step"] == 1 and report["values"]["loss"] == "nan"
    state = json.loads((project.output_dir / "training_state.json").read_text())
    assert state["status"] == "failed" and "loss = nan" in state["reason"]
    assert not (project.output_dir / "adapter_model.safetensors").exists()
    assert not list(project.output_dir.glob("checkpoint-*"))


@pytest.mark.parametrize("count", [None, 17], ids=["mean", "sum-over-items"])
def test_the_output_layer_at_labelled_positions_only_gives_the_full_loss_and_gradients(tiny_gemma3, count) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma3, dtype=torch.float64).train()
    torch.manual_seed(0)
    ids = torch.randint(3, 5000, (3, 24))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # a left-padded row
    labels = ids.clone()
    labels[:, :14] = -100  # the prompt
    labels[2, :20] = -100  # a short answer
    kwargs = {} if count is None else {"num_items_in_batch": torch.tensor(count)}
    params = [p for p in model.parameters() if p.requires_grad]

    full = model(input_ids=ids, attention_mask=mask, labels=labels, **kwargs).loss
    full_grads = torch.autograd.grad(full, params)
    gathered = loss_positions_forward(model)(input_ids=ids, attention_mask=mask, labels=labels, **kwargs)
    grads = torch.autograd.grad(gathered.loss, params)

    assert gathered.logits.shape[0] == int((labels[:, 1:] != -100).sum())  # projected: labelled positions only
    # transformers computes the cross-entropy in float32 whatever the model's dtype, and so does the plugin: the two
    # losses differ only by float32 summation order
    assert torch.allclose(gathered.loss, full, rtol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-8, atol=1e-12) for a, b in zip(grads, full_grads, strict=True))


def test_a_tokenizer_is_fingerprinted_by_its_content(base_model_dir: Path) -> None:
    from datasets.fingerprint import Hasher

    from contract.tokenizer import load_tokenizer
    from training.plugin import _BACKEND_DIGESTS, fast_tokenizer_fingerprints

    first, again, grown = (load_tokenizer(base_model_dir) for _ in range(3))
    Hasher.hash(first)  # datasets' own reducer is registered for this class now: the plugin must replace it
    fast_tokenizer_fingerprints()
    assert Hasher.hash(first) == Hasher.hash(again) == Hasher.hash(grown)  # three loads of one tokenizer: one entry
    assert {first, again, grown} <= set(_BACKEND_DIGESTS.keys())  # hashed by content, not by pickling
    again.chat_template = again.chat_template.replace("<start_of_turn>", "<start_of_turn> ")
    assert Hasher.hash(first) != Hasher.hash(again)  # another template tokenizes differently: another entry
    grown.add_tokens(["<new-token>"])  # after it was hashed once: the added token must still count
    assert Hasher.hash(first) != Hasher.hash(grown)


SINGLE_WORKER_CHECK = """
import json, os, sys
from datasets import Dataset
from training.plugin import single_worker_in_process

rows = Dataset.from_dict({"query": ["turn off the lights", "wake me up at seven tomorrow"]})
def measure(row):
    return {"pid": os.getpid(), "length": len(row["query"])}
pooled = rows.map(measure, num_proc=1)
single_worker_in_process()
here = rows.map(measure, num_proc=1)
here.save_to_disk(sys.argv[1], num_proc=1)
saved = Dataset.load_from_disk(sys.argv[1])
print(json.dumps({"me": os.getpid(), "pooled": list(pooled["pid"]), "here": list(here["pid"]),
                  "lengths": [list(pooled["length"]), list(here["length"]), list(saved["length"])]}))
"""


@pytest.mark.slow  # spawns interpreters: datasets' pool of one, then this process's path
def test_a_single_worker_maps_in_this_process_with_the_same_result(tmp_path: Path) -> None:
    import subprocess
    import sys

    # a fresh interpreter: Axolotl runs in other tests of this process may have applied the patch already
    out = subprocess.run([sys.executable, "-c", SINGLE_WORKER_CHECK, str(tmp_path / "saved")], capture_output=True,
                         text=True, check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert set(result["pooled"]) != {result["me"]}  # datasets' own num_proc=1: a pool of one
    assert set(result["here"]) == {result["me"]}
    assert result["lengths"] == [[19, 28]] * 3
