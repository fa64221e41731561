# Every stage is one target. Knobs: CONFIG (the Axolotl recipe), MODEL (what eval runs), TRAIN_ARGS.
#   make setup quickstart   # install, then run the whole pipeline on the embedded Gemma 3 270M
#   make test

PYTHON_311 ?= python3.11
VENV ?= .venv
PY ?= $(VENV)/bin/python
# accelerate as a module: works in the venv and in the Docker image alike
ACCELERATE := $(PY) -m accelerate.commands.launch
# Never reach a hub unless asked to; no telemetry (a crashed run with telemetry on hangs for minutes).
export HF_HUB_OFFLINE ?= 1
export AXOLOTL_DO_NOT_TRACK := 1
export WANDB_MODE ?= disabled
export HF_HUB_DISABLE_TELEMETRY := 1
export DO_NOT_TRACK := 1

HAS_GPU := $(shell $(PY) -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null)
# The flagship on a GPU, the embedded default anywhere else.
CONFIG ?= $(if $(filter 1,$(HAS_GPU)),axolotl_configs/gemma3-27b-qlora.yaml,axolotl_configs/gemma3-270m-lora.yaml)
# On CPU: no bf16/fp16 (`bf16: auto` would pick fp16) and no Triton LoRA kernels (CUDA only).
CPU_OVERRIDES := --bf16=False --fp16=False --tf32=False --lora_mlp_kernel=False --lora_qkv_kernel=False \
	--lora_o_kernel=False --lora_embedding_kernel=False
TRAIN_ARGS ?=
PIPELINE ?= pipeline.yaml
OUTPUT_DIR = $(shell $(PY) -c "import yaml,sys; print(yaml.safe_load(open('$(CONFIG)'))['output_dir'])")
MODEL ?= $(OUTPUT_DIR)/merged
EVAL_ARGS ?=
# quickstart on CPU: a short run that proves the pipeline (a full epoch takes hours on 2 cores)
QUICK_CPU_TRAIN ?= --max_steps=10 --micro_batch_size=1 --gradient_accumulation_steps=1 --evals_per_epoch=0 \
	--saves_per_epoch=0
QUICK_CPU_EVAL ?= --limit 16 --run quickstart-cpu

.PHONY: setup base-model data axolotl-preprocess train merge eval quickstart test lint bench bench-270m bench-27b docker-build docker-train clean

setup:
	$(PYTHON_311) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip check

base-model:
	$(PY) -m preprocess.base_model

data: base-model
	$(PY) -m preprocess --config $(CONFIG) --pipeline $(PIPELINE)

# Axolotl's own tokenization and label masking, without training (to inspect or cache it).
axolotl-preprocess: data
	$(PY) -m preprocess.recipe_check $(CONFIG)
	$(PY) -m axolotl.cli.preprocess $(CONFIG) $(if $(filter 1,$(HAS_GPU)),,$(CPU_OVERRIDES))

train: data
	$(PY) -m preprocess.recipe_check $(CONFIG)
	$(ACCELERATE) -m axolotl.cli.train $(CONFIG) $(if $(filter 1,$(HAS_GPU)),,$(CPU_OVERRIDES)) $(TRAIN_ARGS)

merge:
	$(PY) -m postprocess --config $(CONFIG)

eval:
	$(PY) -m evaluation --config $(CONFIG) --model $(MODEL) $(EVAL_ARGS)

quickstart:
	$(MAKE) train merge eval CONFIG=axolotl_configs/gemma3-270m-lora.yaml \
		$(if $(filter 1,$(HAS_GPU)),,TRAIN_ARGS="$(QUICK_CPU_TRAIN)" EVAL_ARGS="$(QUICK_CPU_EVAL)")

test:
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/hadolint docker/Dockerfile

# CPU: grammar engines. GPU: the 270M recipe sweep and the 27B memory/speed comparison (README, "Measured results").
bench:
	$(PY) -m bench.grammar_engines

bench-270m: data
	$(PY) -m bench.sweep_270m --parallel 3

bench-27b: data
	PY=$(PY) bash bench/gpu_27b.sh 4 8 16

docker-build:
	docker build -f docker/Dockerfile -t gemma-json-finetune .

docker-train:
	docker run --gpus all --rm -e HF_TOKEN -v $(PWD)/data:/workspace/app/data \
		-v $(PWD)/outputs:/workspace/app/outputs -v $(PWD)/reports:/workspace/app/reports \
		-v hf-cache:/workspace/hf-cache gemma-json-finetune make train merge eval \
		CONFIG=$(or $(DOCKER_CONFIG),axolotl_configs/gemma3-27b-qlora.yaml)

clean:
	rm -rf data/processed outputs reports/runs
