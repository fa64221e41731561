"""The Axolotl plugin every recipe lists (`plugins: [training.plugin.RecipePlugin]`). It keeps a run honest,
and lets the 270M spend its compute on the answer:

- **cuDNN attention backward.** On Hopper GPUs (sm_90: H100, H200) with cuDNN older than 9.26, PyTorch's
  cuDNN SDPA backward returns NaN in grad_q when an attention mask is passed and the padded length is
  64 mod 128 (pytorch/pytorch#196678; fixed by PyTorch's upgrade to cuDNN 9.26, pytorch/pytorch#196861).
  Axolotl pads batches to multiples of 64, so ordinary data hits it. Where the installed GPU and cuDNN are
  in that range, the plugin switches the cuDNN SDPA backend off; SDPA then runs on its flash /
  memory-efficient kernels. `cudnn_sdpa: enable|disable` overrides the decision.
- **Non-finite guard.** The first logged step whose loss or grad norm is NaN/inf stops training with a
  message naming the step and the value, and a non-zero exit: no final adapter is written as if the run
  had succeeded. The HF Trainer's `logging_nan_inf_filter` (which logs a NaN loss as the running mean, so a
  diverged run looks calm) is switched off.
- **The output layer only where the loss is** (`loss_positions_only: true`). The loss covers only the answer
  (~25 of ~130 tokens), yet a causal LM projects every position onto the 262,144-token vocabulary, which is
  ~60 % of the 270M's FLOPs. In training, the hidden states are gathered at the positions that have a label
  before the projection; loss and gradients are those of the full computation (tests/test_training_plugin.py).
- **Tokenizing in seconds.** `datasets` fingerprints every `map()` by pickling its function, the tokenizer
  included: seconds per map for Gemma's 262k-token vocabulary, most of Axolotl's preparation time in a profile.
  The plugin fingerprints a tokenizer by its content instead (its serialized backend, hashed once, its added
  tokens and Python-side settings). And `datasets` runs `num_proc=1` in a spawned pool of one, a fresh
  interpreter that imports torch and Axolotl again (Axolotl saves with at least one): the plugin runs a single
  worker in this process. `python -m experiments.prep_270m` times the sample's preparation with and without it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import weakref
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from axolotl.integrations.base import BasePlugin
from pydantic import BaseModel, Field
from transformers import PreTrainedModel, TrainerCallback
from transformers.modeling_outputs import CausalLMOutputWithPast

from contract.state import NON_FINITE_REPORT

# cuDNN >= 9.26 carries the fix (PyTorch PR #196861 upgrades to it "to fix #196678").
CUDNN_FIXED = 92600


class RecipePluginArgs(BaseModel):
    """Recipe keys this plugin adds."""

    cudnn_sdpa: Literal["auto", "enable", "disable"] = Field(
        default="auto",
        json_schema_extra={"description": "cuDNN attention backend for training: auto = off where the "
                           "NaN-gradient bug applies (Hopper GPU, cuDNN < 9.26)"},
    )
    stop_on_non_finite: bool = Field(
        default=True,
        json_schema_extra={"description": "stop at the first NaN/inf loss or grad norm (false: benchmarks only)"},
    )
    loss_positions_only: bool = Field(
        default=False,
        json_schema_extra={"description": "in training, run the output layer only at positions with a label"},
    )


def cudnn_sdpa_bug(capability: tuple[int, int] | None, cudnn_version: int | None) -> str | None:
    """Why this GPU + cuDNN hit pytorch/pytorch#196678, or None where it does not apply.
    Facts checked: the failing kernel is cuDNN's sm90 flash backward; the fix ships in cuDNN 9.26."""
    if capability is None or cudnn_version is None:
        return None
    if capability[0] != 9:
        return None
    if cudnn_version >= CUDNN_FIXED:
        return None
    return (f"sm_{capability[0]}{capability[1]} GPU with cuDNN {cudnn_version} (< 9.26): cuDNN's SDPA backward "
            "returns NaN gradients for masked batches padded to 64 mod 128 (pytorch/pytorch#196678)")


def decide_cudnn_sdpa(setting: str, capability: tuple[int, int] | None, cudnn_version: int | None) -> tuple[bool, str]:
    """(keep cuDNN SDPA on?, the reason, for the log)."""
    if setting == "enable":
        return True, "cudnn_sdpa: enable in the recipe"
    if setting == "disable":
        return False, "cudnn_sdpa: disable in the recipe"
    bug = cudnn_sdpa_bug(capability, cudnn_version)
    if bug:
        return False, bug
    return True, "not affected" if capability else "no CUDA device"


def _device_facts() -> tuple[tuple[int, int] | None, int | None]:
    if not torch.cuda.is_available():
        return None, None
    return torch.cuda.get_device_capability(), torch.backends.cudnn.version()


class NonFiniteTraining(RuntimeError):
    """Raised from the Trainer's log callback: training must not go on, nor save a final model."""


def non_finite_values(logs: dict[str, Any]) -> dict[str, float]:
    found = {}
    for key in ("loss", "grad_norm", "eval_loss"):
        if key in logs:
            value = float(logs[key])
            if not math.isfinite(value):
                found[key] = value
    return found


def diagnosis(step: int, values: dict[str, float], cudnn_note: str) -> str:
    shown = ", ".join(f"{key} = {value}" for key, value in values.items())
    return (f"training stopped at step {step}: {shown}. Likely causes, most likely first: "
            f"(1) cuDNN attention backward on Hopper GPUs ({cudnn_note}); set `cudnn_sdpa: disable` "
            "or `attn_implementation: eager`; (2) fp16 on Gemma (use bf16); (3) a learning rate too high "
            "for this data (lower `learning_rate`, keep `max_grad_norm`); (4) a non-finite weight in the base model")


class NonFiniteGuard(TrainerCallback):
    def __init__(self, output_dir: Path, cudnn_note: str) -> None:
        self.output_dir, self.cudnn_note = output_dir, cudnn_note

    def on_log(self, args, state, control, logs=None, **kwargs):
        values = non_finite_values(logs or {})
        if not values:
            return
        message = diagnosis(state.global_step, values, self.cudnn_note)
        if state.is_world_process_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            report = {"step": state.global_step, "values": {k: str(v) for k, v in values.items()},
                      "message": message}
            (self.output_dir / NON_FINITE_REPORT).write_text(json.dumps(report, indent=2) + "\n")
        raise NonFiniteTraining(message)


def loss_positions_forward(model: PreTrainedModel):
    """A forward for a text *ForCausalLM that, in training, projects only the hidden states whose next-token label
    is not -100, and computes transformers' causal-LM loss (sum / num_items_in_batch, else mean) from them.
    In eval mode, or without labels, it is the model's own forward."""
    original = type(model).forward

    def forward(input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, inputs_embeds=None,
                labels=None, use_cache=None, logits_to_keep=0, **kwargs):
        if labels is None or not model.training:
            return original(model, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=past_key_values, inputs_embeds=inputs_embeds, labels=labels,
                            use_cache=use_cache, logits_to_keep=logits_to_keep, **kwargs)
        outputs = model.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              past_key_values=past_key_values, inputs_embeds=inputs_embeds, use_cache=use_cache,
                              **kwargs)
        targets = kwargs.get("shift_labels")
        if targets is None:  # as transformers' ForCausalLMLoss: the label of position t is the token at t + 1
            targets = F.pad(labels, (0, 1), value=-100)[..., 1:]
        keep = targets != -100
        logits = model.lm_head(outputs.last_hidden_state[keep])
        cap = model.config.final_logit_softcapping
        if cap is not None:
            logits = torch.tanh(logits / cap) * cap
        count = kwargs.get("num_items_in_batch")
        loss = F.cross_entropy(logits.float(), targets[keep].to(logits.device),
                               reduction="mean" if count is None else "sum")
        if count is not None:
            loss = loss / (count.to(loss.device) if torch.is_tensor(count) else count)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values)

    return forward


_BACKEND_DIGESTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> digest of its backend


def tokenizer_fingerprint(tokenizer) -> str:
    """What identifies a tokenizer's behaviour: its serialized backend (vocabulary, merges, normalizer), hashed once
    per tokenizer object (0.5 s for Gemma's), and what can change after loading: the added tokens and the
    Python-side settings, read on every call."""
    digest = _BACKEND_DIGESTS.get(tokenizer)
    if digest is None:
        backend = getattr(tokenizer, "backend_tokenizer", None)
        serialized = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
        digest = _BACKEND_DIGESTS[tokenizer] = hashlib.sha256(serialized.encode()).hexdigest()
    settings = {key: str(getattr(tokenizer, key, None)) for key in
                ("chat_template", "padding_side", "truncation_side", "model_max_length", "add_bos_token",
                 "add_eos_token", "special_tokens_map")}
    settings["added_tokens"] = hashlib.sha256(str(tokenizer.added_tokens_decoder).encode()).hexdigest()
    return digest + json.dumps(settings, sort_keys=True)


def fast_tokenizer_fingerprints() -> None:
    """Make `datasets` hash tokenizers by `tokenizer_fingerprint` (its Pickler is used for fingerprints only)."""
    from datasets.utils import _dill

    def save(pickler, tokenizer) -> None:
        pickler.save_reduce(str, (f"{type(tokenizer).__qualname__}:{tokenizer_fingerprint(tokenizer)}",),
                            obj=tokenizer)

    _dill._save_transformersPreTrainedTokenizerBase = save
    # datasets registers the reducer per tokenizer class on first use: replace any registered before this call
    from transformers import PreTrainedTokenizerBase

    for kind in [k for k in _dill.Pickler.dispatch if isinstance(k, type) and issubclass(k, PreTrainedTokenizerBase)]:
        _dill.Pickler.dispatch[kind] = save


def single_worker_in_process() -> None:
    """`Dataset.map`/`filter`/`save_to_disk` with `num_proc=1`: in this process, not in a pool of one (same
    result: one shard either way)."""
    from datasets import Dataset

    for name in ("map", "filter", "save_to_disk"):
        original = getattr(Dataset, name)
        if getattr(original, "_single_worker_in_process", False):
            continue

        @functools.wraps(original)
        def patched(self, *args, __original=original, **kwargs):
            if kwargs.get("num_proc") == 1:
                kwargs["num_proc"] = None
            return __original(self, *args, **kwargs)

        patched._single_worker_in_process = True
        setattr(Dataset, name, patched)


class RecipePlugin(BasePlugin):
    def __init__(self) -> None:
        super().__init__()
        self.cudnn_note = "not decided yet"

    def register(self, cfg: dict) -> None:
        fast_tokenizer_fingerprints()  # before Axolotl tokenizes anything
        single_worker_in_process()

    def get_input_args(self) -> str:
        return "training.plugin.RecipePluginArgs"

    def load_datasets(self, cfg, preprocess: bool = False) -> None:
        """Not for datasets (None: Axolotl loads them itself): the last hook before the model is placed.
        Axolotl maps each rank to device index LOCAL_RANK, which exists only on accelerators; CPU ranks (gloo, the
        two-process proof in tests/test_distributed.py) must load the model on the CPU."""
        if not torch.cuda.is_available() and (cfg.world_size or 1) > 1:
            cfg.device_map = "cpu"

    def pre_model_load(self, cfg) -> None:
        keep, why = decide_cudnn_sdpa(cfg.cudnn_sdpa or "auto", *_device_facts())
        if torch.cuda.is_available():
            torch.backends.cuda.enable_cudnn_sdp(keep)
        self.cudnn_note = f"cuDNN SDPA {'on' if keep else 'OFF'}: {why}"
        print(f"[training.plugin] {self.cudnn_note}", flush=True)

    def post_model_load(self, cfg, model) -> None:
        if not cfg.loss_positions_only:
            return
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        if cfg.liger_fused_linear_cross_entropy or cfg.label_smoothing_factor \
                or not type(base).__name__.endswith("ForCausalLM"):
            raise ValueError("loss_positions_only needs a text *ForCausalLM without Liger's fused cross-entropy and "
                             "without label smoothing (they compute the loss from all logits themselves)")
        base.forward = loss_positions_forward(base)
        print("[training.plugin] output layer only at the positions with a label", flush=True)

    def get_training_args(self, cfg) -> dict[str, Any]:
        return {"logging_nan_inf_filter": False}

    def add_callbacks_post_trainer(self, cfg, trainer) -> list:
        (Path(cfg.output_dir) / NON_FINITE_REPORT).unlink(missing_ok=True)  # a report from an earlier run
        if cfg.stop_on_non_finite is False:
            print("[training.plugin] WARNING: stop_on_non_finite is off: a NaN run trains on", flush=True)
            return []
        return [NonFiniteGuard(Path(cfg.output_dir), self.cudnn_note)]
