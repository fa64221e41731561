"""The arithmetic and the rules behind the README's measured figures: the sweep's derived recipes and splits,
the decisions taken from its results, the FLOP counts for MFU and the 27B depth extrapolation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from contract.config import REPO_ROOT
from contract.rows import training_row
from experiments.extrapolate_27b import FULL_DEPTH, extrapolate, logged_peaks
from experiments.flops import Geometry, train_flops
from experiments.gemma27b_geometry import matmul_params
from experiments.pick import pick_prompt, pick_recipe
from experiments.sweep_270m import SWEEP_DIR, Experiment, carve, experiment_recipe, load_experiments
from training.recipes import load_recipe

EXPERIMENTS = REPO_ROOT / "experiments/experiments_270m.yaml"


def test_a_full_fine_tune_experiment_drops_every_lora_key_and_writes_only_under_its_own_directory() -> None:
    spec, experiments = load_experiments(EXPERIMENTS)
    base = load_recipe(REPO_ROOT / spec["recipe"])
    full_ft = next(e for e in experiments if e.name == "full-ft")
    recipe = experiment_recipe(base, spec["common"], full_ft, SWEEP_DIR / full_ft.name)
    adapter_keys = [key for key in recipe
                    if key == "adapter" or (key.startswith("lora_") and not key.endswith("_kernel"))]
    assert adapter_keys == [] and recipe["learning_rate"] == 5e-5
    written = [recipe["output_dir"], recipe["dataset_prepared_path"], recipe["datasets"][0]["path"],
               recipe["test_datasets"][0]["path"]]
    assert all(path.startswith("outputs/sweep/full-ft/") for path in written)
    assert base["datasets"][0]["path"] == "data/processed/train.jsonl"  # the shipped recipe is untouched


def test_the_learning_curve_and_final_runs_expand_to_two_seeds_per_point_scored_on_eval() -> None:
    _, experiments = load_experiments(EXPERIMENTS)
    curve = [e for e in experiments if e.name.startswith("curve-")]
    assert [e.name for e in curve][:2] == ["curve-100-s1", "curve-100-s2"] and len(curve) == 10
    assert all(e.eval_on == "eval" for e in curve) and curve[-1].train_records is None
    assert {e.seed for e in experiments if e.name.startswith("final-")} == {42, 7}


def _rows(intents: list[str]) -> str:
    return "".join(json.dumps(training_row(f"q{i}", json.dumps({"intent": intent}), "S")) + "\n"
                   for i, intent in enumerate(intents))


def test_dev_is_a_stratified_tenth_held_out_of_train_and_the_curve_subsamples_the_rest(tmp_path: Path) -> None:
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    intents = [f"intent_{i % 10}" for i in range(200)]
    train.write_text(_rows(intents))
    kept, scored = carve(train, evaluation, Experiment("x", "x", train_records=100, seed=3), "/intent")
    dev = scored.read_text().splitlines()
    assert scored.name == "dev.jsonl" and len(dev) == 20 and kept == 100
    assert not set(dev) & set(train.read_text().splitlines())  # never trained on
    assert {json.loads(json.loads(line)["messages"][2]["content"])["intent"] for line in dev} == set(intents)


ROWS = [{"name": name, "scored_on": "dev", "settings": {"system_prompt": prompt},
         "tuned+constrained": {"exact_match": exact}}
        for name, prompt, exact in [("prompt-schema", "data/prompts/schema.txt", 0.563),
                                    ("prompt-labels", "data/prompts/labels.txt", 0.574),
                                    ("prompt-task", "data/prompts/task.txt", 0.557)]]


def test_the_cheapest_prompt_within_two_points_of_the_best_is_shipped() -> None:
    assert pick_prompt(ROWS) == "data/prompts/task.txt"  # 55.7 % >= 57.4 % - 2
    worse = [{**r, "tuned+constrained": {"exact_match": 0.5}} if r["name"] == "prompt-task" else r for r in ROWS]
    assert pick_prompt(worse) == "data/prompts/labels.txt"


def test_a_recipe_change_ships_only_if_it_beats_the_shipped_recipe_on_dev() -> None:
    better = {"name": "epochs-6", "scored_on": "dev", "tuned+constrained": {"exact_match": 0.60}}
    assert pick_recipe([*ROWS, better], "data/prompts/task.txt")["overrides"] == {"num_epochs": 6}
    equal = {**better, "tuned+constrained": {"exact_match": 0.557}}
    assert pick_recipe([*ROWS, equal], "data/prompts/task.txt") == \
        {"experiment": "prompt-task", "dev_exact_match": 0.557, "overrides": {}}


def test_gemma_3_270m_flops_per_token_by_part() -> None:
    g = Geometry(layers=18, hidden=640, heads=4, kv_heads=1, head_dim=256, intermediate=2048, vocab=262144,
                 sliding_window=512)
    assert g.body == 18 * (640 * 256 * 10 + 3 * 640 * 2048) and g.head == 262144 * 640  # 100 M and 168 M
    lora = train_flops(g, tokens=1, loss_tokens=0.25, seq_len=100, full_finetune=False, head_on_loss_only=True)
    assert lora["body"] == 4 * g.body and lora["output_layer"] == 4 * g.head * 0.25
    full = train_flops(g, tokens=1, loss_tokens=0.25, seq_len=100, full_finetune=True, head_on_loss_only=False)
    assert full["body"] == 6 * g.body and full["output_layer"] == 4 * g.head


def test_gemma_3_27b_text_model_multiplies_each_token_by_27_billion_weights() -> None:
    # 62 layers x 412.9 M (attention 66.1 M + MLP 346.8 M) + output layer 262,208 x 5,376.
    assert matmul_params(FULL_DEPTH) == 62 * (5376 * 128 * (2 * 32 + 2 * 16) + 3 * 5376 * 21504) + 262208 * 5376
    assert matmul_params(FULL_DEPTH) / 1e9 == pytest.approx(27.0, abs=0.05)


def test_the_depth_fit_recovers_an_exactly_linear_law() -> None:
    runs = {layers: {"peak_allocated_gib": 3.0 + 0.2 * layers, "peak_reserved_gib": 4.0 + 0.25 * layers,
                     "tokens_per_s": 1 / (1e-4 + 2e-5 * layers)} for layers in (4, 8, 16)}
    full = extrapolate(runs)
    assert full["peak_allocated_gib"] == pytest.approx(3.0 + 0.2 * 62)
    assert full["per_layer_reserved_gib"] == pytest.approx(0.25)
    assert full["tokens_per_s"] == pytest.approx(1 / (1e-4 + 2e-5 * 62))


def test_the_preparation_bench_compares_the_recipe_with_and_without_the_plugin() -> None:
    from experiments.prep_270m import PLUGIN, variants
    from training.recipes import load_recipe

    recipe = load_recipe("axolotl_configs/gemma3-270m-lora.yaml")
    shipped, without = variants(recipe).values()
    assert shipped == recipe and PLUGIN in shipped["plugins"] and shipped["loss_positions_only"]
    assert PLUGIN not in without.get("plugins", []) and "loss_positions_only" not in without
    assert without == {k: v for k, v in recipe.items() if k not in ("plugins", "loss_positions_only")}


def test_the_step_timer_keeps_the_whole_runs_peak_although_axolotl_resets_torchs_peaks_at_every_log() -> None:
    from types import SimpleNamespace

    from experiments.step_timer import StepTimer

    gib = 2**30
    # the peaks at the start of training (the model's loading), then after each step: step 1, then each log's reset
    # leaves only the step since; the last reading is at the end of training.
    readings = iter([(3 * gib, 4 * gib), (10 * gib, 12 * gib), (5 * gib, 6 * gib), (7 * gib, 7 * gib),
                     (5 * gib, 6 * gib)])
    timer = StepTimer(warmup=0, memory=lambda: next(readings))
    args = SimpleNamespace(per_device_train_batch_size=2, gradient_accumulation_steps=1)
    state = SimpleNamespace(max_steps=3, global_step=0, num_input_tokens_seen=0)
    timer.on_train_begin(args, state, None)
    for step in range(1, 4):
        state.global_step, state.num_input_tokens_seen = step, 100 * step
        timer.on_step_end(args, state, None)
    timer.on_train_end(args, state, None)
    summary = timer.summary()
    assert (summary["peak_allocated_gib"], summary["peak_reserved_gib"]) == (10.0, 12.0)
    assert (summary["load_peak_allocated_gib"], summary["load_peak_reserved_gib"]) == (3.0, 4.0)
    assert summary["step_peak_reserved_gib"] == 12.0
    assert summary["tokens"] == 200 and summary["measured_steps"] == 2


def test_a_sync_trace_counts_synchronizing_operations_by_their_caller_and_lets_other_warnings_through(
        monkeypatch) -> None:
    import warnings

    from experiments.step_timer import SyncTrace

    shown: list[str] = []
    monkeypatch.setattr(warnings, "showwarning", lambda message, *args, **kwargs: shown.append(str(message)))

    def gather_positions() -> None:  # what torch's sync debug mode warns from a boolean-mask index
        warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)

    trace = SyncTrace()
    trace.start()
    for _ in range(3):
        gather_positions()
    warnings.warn("unrelated", UserWarning, stacklevel=1)
    traced = trace.stop()
    assert traced["syncs_in_one_step"] == 3
    (stack, count), = traced["by_stack"].items()
    assert count == 3 and stack.startswith("tests/test_experiments.py:") and "gather_positions" in stack
    assert shown == ["unrelated"]


def test_axolotls_per_log_memory_lines_give_the_runs_peak() -> None:
    log = """{'loss': '2.1', 'memory/max_active (GiB)': '9.89', 'memory/max_allocated (GiB)': '9.89', \
'memory/device_reserved (GiB)': '10.32'}
{'loss': '1.9', 'memory/max_active (GiB)': '3.76', 'memory/max_allocated (GiB)': '3.76', \
'memory/device_reserved (GiB)': '10.33'}"""
    assert logged_peaks(log) == {"peak_allocated_gib": 9.89, "peak_reserved_gib": 10.33}
    assert logged_peaks("step_timer: {}") == {}


def test_the_27b_stand_in_is_written_as_the_published_checkpoint_and_loads_without_renaming(
        tmp_path: Path, base_model_dir: Path) -> None:
    from transformers import Gemma3ForConditionalGeneration

    from experiments.gemma27b_geometry import TOY, write

    summary = write(tmp_path / "g27", base_model_dir, layers=2, max_bytes=4_000_000, config_overrides=TOY)
    index = json.loads((tmp_path / "g27/model.safetensors.index.json").read_text())["weight_map"]
    assert summary["shards"] >= 3 and set(index.values()) == {p.name for p in (tmp_path / "g27").glob("model-*")}
    assert {".".join(name.split(".")[:2]) for name in index if not name.startswith("multi_modal_projector.")} == {
        "language_model.model", "vision_tower.vision_model"}
    model, info = Gemma3ForConditionalGeneration.from_pretrained(tmp_path / "g27", output_loading_info=True)
    assert not any(info.values()) and model.config.text_config.rope_parameters["full_attention"]["factor"] == 8.0


def test_the_streaming_merge_puts_a_27b_recipe_adapter_into_the_published_names(tmp_path: Path,
                                                                                  base_model_dir: Path) -> None:
    """The adapter names the loaded model's modules (`model.language_model.layers...`); the checkpoint says
    `language_model.model.layers...`: the merged matrices must land on the right tensors, none dropped."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import Gemma3ForConditionalGeneration

    from experiments.gemma27b_geometry import TOY, write
    from merge.streaming import read_adapter, stream_merge

    base = tmp_path / "g27"
    write(base, base_model_dir, layers=2, max_bytes=4_000_000, config_overrides=TOY)
    targets = load_recipe(REPO_ROOT / "axolotl_configs/gemma3-27b-qlora.yaml")["lora_target_modules"]
    torch.manual_seed(0)
    peft = get_peft_model(Gemma3ForConditionalGeneration.from_pretrained(base, dtype=torch.float32),
                          LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    peft.save_pretrained(tmp_path / "adapter")
    adapter = tmp_path / "adapter"
    proof = stream_merge(base, read_adapter(adapter), adapter, tmp_path, torch.bfloat16, progress=lambda _: None)
    assert proof.passed and proof.matrices == 2 * 7  # the language model's linears only, no vision tower
    (tmp_path / "config.json").write_bytes((base / "config.json").read_bytes())
    merged = Gemma3ForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.bfloat16).state_dict()
    reference = PeftModel.from_pretrained(Gemma3ForConditionalGeneration.from_pretrained(base, dtype=torch.float32),
                                          str(tmp_path / "adapter")).merge_and_unload().state_dict()
    assert all(torch.equal(merged[name], reference[name].to(torch.bfloat16)) for name in merged)
