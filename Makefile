# Every stage is one target; its settings live in pipeline.yaml (CONFIG= picks another recipe than its `recipe`).
#   make setup quickstart   # install, then the whole pipeline on the embedded Gemma 3 270M
#   make test-unit          # no model at all (seconds); test-fast: no training (minutes); test: all of it
# Knobs: CONFIG, PIPELINE, MODEL (what eval/predict/export use), TRAIN_ARGS="--num_epochs=5 ...", and
# MERGE_ARGS / EVAL_ARGS / PREDICT_ARGS / EXPORT_ARGS (any flag of that stage, e.g. EVAL_ARGS="--limit 50").

PYTHON_311 ?= python3.11
VENV ?= .venv
PY ?= $(VENV)/bin/python
# Never reach a hub unless asked to; no telemetry (a crashed run with telemetry on hangs for minutes).
export HF_HUB_OFFLINE ?= 1
export AXOLOTL_DO_NOT_TRACK := 1
export WANDB_MODE ?= disabled
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

PIPELINE ?= pipeline.yaml
CONFIG ?=
MODEL ?=
STAGE = --pipeline $(PIPELINE) $(if $(CONFIG),--config $(CONFIG))
TRAIN_ARGS ?=
# TENSORBOARD=1: training curves in <output_dir>/runs (`tensorboard --logdir outputs`); local only, telemetry stays off
TENSORBOARD ?=
MERGE_ARGS ?=
EVAL_ARGS ?=
PREDICT_ARGS ?=
EXPORT_ARGS ?=
PUSH_ARGS ?=
SUGGEST_ARGS ?=
AUDIT_ARGS ?=
HAS_GPU = $(shell $(PY) -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)
# quickstart on a CPU: 64 steps of 8 examples (512 of the 1,826) at a higher learning rate with the LoRA rank it was
# measured with (64), scored constrained on the first 100 eval examples: what 2 cores teach in ~14 minutes
# (intent 66-68 %; 48 steps reached 58 %: README)
QUICK_CPU_TRAIN ?= --max_steps=64 --micro_batch_size=8 --gradient_accumulation_steps=1 --learning_rate=0.0006 \
	--lora_r=64 --lora_alpha=128 \
	--warmup_ratio=0.05 --evals_per_epoch=0 --saves_per_epoch=0 --output_dir=outputs/quickstart-cpu
QUICK_CPU_EVAL ?= --limit 100 --variants tuned+constrained --batch-size 25 --run quickstart-cpu \
	--model outputs/quickstart-cpu/merged
QUICK_CPU_MERGE ?= --adapter outputs/quickstart-cpu --out outputs/quickstart-cpu/merged

# llama.cpp for `make export`: llama-cpp-python is an sdist only; its source vendors llama.cpp's GGUF converter.
LLAMA_CPP_PYTHON ?= 0.3.36
LLAMA_CPP_SRC = .tools/llama_cpp_python-$(LLAMA_CPP_PYTHON)

.PHONY: setup base-model data axolotl-preprocess train merge eval predict suggest audit fix-spans export export-setup push \
	quickstart test \
	test-fast test-unit test-lab lint docker-build docker-train clean

setup:
	$(PYTHON_311) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m pip check

base-model:
	$(PY) -m training.base_model

data: base-model
	$(PY) -m preprocess $(STAGE)

# Axolotl's own tokenization and label masking, without training (to inspect it).
axolotl-preprocess: data
	$(PY) -m training $(STAGE) --preprocess-only

train: data
	$(PY) -m training $(STAGE) $(if $(TENSORBOARD),--use_tensorboard=true) $(TRAIN_ARGS)

merge:
	$(PY) -m merge $(STAGE) $(MERGE_ARGS)

eval:
	$(PY) -m evaluation $(STAGE) $(if $(MODEL),--model $(MODEL)) $(EVAL_ARGS)

predict:
	$(PY) -m evaluation.predict $(STAGE) $(if $(MODEL),--model $(MODEL)) $(PREDICT_ARGS)

# Which unlabeled queries to label next: make suggest SUGGEST_ARGS="--input pool.txt --output to_label.jsonl"
suggest:
	$(PY) -m labeling.suggest $(STAGE) $(if $(MODEL),--model $(MODEL)) $(SUGGEST_ARGS)

# Which labels of raw_data.json are likely wrong (k trainings; on a CPU: AUDIT_ARGS="--folds 2 --max-steps 60")
audit: data
	$(PY) -m labeling.audit $(STAGE) $(AUDIT_ARGS)

# Copied values that differ from their query only in case or spacing, rewritten into a new file (raw_data.json kept)
FIXED ?= data/raw_data.fixed.json
fix-spans:
	$(PY) -m labeling.fix_spans $(STAGE) --out $(FIXED)

# GGUF files + Ollama Modelfile beside the merged model, with a parity check against the HF model (README, "Use the model").
export: export-setup
	$(PY) -m release.export $(STAGE) $(if $(MODEL),--model $(MODEL)) $(EXPORT_ARGS)

# Builds llama.cpp once (~7 min on 2 cores): not part of `make setup`, which GPU training does not need it for.
# GGML_NATIVE=OFF (an AVX2 build): -march=native compiles in llama.cpp's AMX kernels wherever the CPU has AMX, and
# on such a machine here decoding a q8_0 GGUF crashed with a segmentation fault (f16 ran) - a parity check must run.
export-setup: $(LLAMA_CPP_SRC)/.built

$(LLAMA_CPP_SRC)/.built:
	mkdir -p .tools
	$(PY) -m pip download --quiet --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_PYTHON) -d .tools
	tar -xzf .tools/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz -C .tools
	CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(PY) -m pip install --quiet -c constraints.txt $(LLAMA_CPP_SRC)
	touch $@

# Upload the merged model with its card: make push HUB_REPO=you/name (HF_TOKEN from the environment);
# PUSH_ARGS=--dry-run writes the card and prints what would go up.
push:
	HF_HUB_OFFLINE=0 $(PY) -m release.push $(STAGE) --repo $(HUB_REPO) $(if $(MODEL),--model $(MODEL)) $(PUSH_ARGS)

quickstart:
	$(MAKE) train merge eval CONFIG=axolotl_configs/gemma3-270m-lora.yaml \
		$(if $(filter 1,$(HAS_GPU)),,TRAIN_ARGS="$(QUICK_CPU_TRAIN)" MERGE_ARGS="$(QUICK_CPU_MERGE)" \
		EVAL_ARGS="$(QUICK_CPU_EVAL)")

# Everything, the GGUF export parity included (so llama.cpp is built first, once).
test: export-setup
	$(PY) -m pytest tests

# No training and no decoding of a real model: the contract, the checks, the configs (minutes on 2 cores).
test-fast:
	$(PY) -m pytest tests -m "not axolotl and not slow"

# No model at all (not even the 270M's tokenizer): contract, checks, split, scoring, config (seconds).
test-unit:
	TEST_TIER=unit $(PY) -m pytest tests -m "not model and not axolotl and not slow"

# The experiments' own tests (experiments/tests): the arithmetic and rules behind the measured results.
test-lab:
	$(PY) -m pytest experiments/tests

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/hadolint docker/Dockerfile

docker-build:
	docker build -f docker/Dockerfile -t gemma-json-finetune .

docker-train:
	docker run --gpus all --rm -e HF_TOKEN -v $(PWD)/data:/workspace/app/data \
		-v $(PWD)/outputs:/workspace/app/outputs -v $(PWD)/reports:/workspace/app/reports \
		-v hf-cache:/workspace/hf-cache gemma-json-finetune make train merge eval \
		CONFIG=$(or $(DOCKER_CONFIG),axolotl_configs/gemma3-27b-qlora.yaml)

clean:
	rm -rf data/processed outputs reports/runs
