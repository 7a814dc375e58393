# Two commands on a fresh machine: `make train` and `make test` (see README.md).
PYTHON     ?= python3
VENV       ?= .venv
# GPU users override this, e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"
TORCH_SPEC ?= torch==2.13.0
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.installed
PYTEST_ARGS ?=
SWEEP      ?= sweeps/srcnn_filters_cpu.yaml
DATA       ?= $(or $(RESTORELAB_DATA),$(wildcard ../shared/datasets))

ABLATIONS  := $(foreach a,filters filter_sizes depth channels train_set,sweeps/srcnn_$(a)_cpu.yaml)
# The CPU sweeps train on T91; without the benchmark sets, on the bundled photos (and the training-set ablation,
# T91 vs more, is left out).
HAVE_T91   := $(if $(DATA),$(wildcard $(DATA)/T91))
NO_T91     := $(if $(HAVE_T91),,-- --data.init_args.train=[skimage:train])
SWEEP_ENV  := $(if $(DATA),RESTORELAB_DATA=$(abspath $(DATA)))

.PHONY: install train test test-slow bench benchmark sweep ablations slurm report models zero-shot clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: install
	$(VENV)/bin/restorelab fit --config configs/srcnn.yaml

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -m slow $(PYTEST_ARGS)

# Bicubic + the newest SRCNN checkpoint of `make train` (trained first if missing) on Set5/Set14 when the
# benchmark sets are there, on the bundled held-out photos otherwise.
benchmark: install
	@ckpt=$$(ls -t runs/srcnn/*/checkpoints/best-*.ckpt 2>/dev/null | head -n 1); \
	if [ -z "$$ckpt" ]; then $(MAKE) train || exit 1; ckpt=$$(ls -t runs/srcnn/*/checkpoints/best-*.ckpt | head -n 1); fi; \
	$(VENV)/bin/restorelab benchmark --ckpt "$$ckpt" --names SRCNN $(if $(DATA),--data_root $(DATA)) --out runs/benchmark

# Every net against this machine's measured ceiling, the Lightning loop's cost, tiled inference at 1-16 MP,
# synthesis rates and the classical methods' cost; regenerates docs/bench.md (NOTES.md quotes its ratios).
bench: install
	$(VENV)/bin/restorelab bench --out docs/bench.md

# Offline: the sweep YAML expanded locally, trial by trial, W&B offline; with a W&B key: wandb sweep + agent.
# The default: SRCNN's filter counts at the CPU budget of configs/experiment/srcnn_ablation_cpu.yaml.
sweep: install
	$(SWEEP_ENV) $(VENV)/bin/restorelab sweep run $(SWEEP) --out runs $(if $(findstring _cpu,$(SWEEP)),$(NO_T91))

# All five SRCNN ablations at the CPU budget (14 trials of 2000 steps; `make sweep`, 3 of them, takes
# 2.5 min on 2 cores), then `make report`.
ablations: install
	@for s in $(ABLATIONS); do \
	  case "$$s" in *train_set*) [ -n "$(HAVE_T91)" ] || { echo "skipping $$s: needs T91 (RESTORELAB_DATA)"; continue; };; esac; \
	  $(SWEEP_ENV) $(VENV)/bin/restorelab sweep run $$s --out runs $(NO_T91) || exit 1; \
	done
	$(MAKE) report

SLURM_ARGS ?= --submit --wait
slurm: install
	$(VENV)/bin/restorelab slurm $(SWEEP) --out runs $(SLURM_ARGS)

# One table, trend sentence and PSNR-vs-step figure per ablation that has runs, into docs/ablations/ and README.md.
report: install
	$(VENV)/bin/restorelab report $(or $(REPORT),$(ABLATIONS)) --runs runs --out docs/ablations --readme README.md

# Short CPU-budget runs of every net, two at a time on one core each; rewrites the model table in README.md.
models: install
	$(VENV)/bin/restorelab models --threads 1 --jobs 2

# MZSR's comparison on Set5 x2 under its four test kernels: trains the MZSR stages (30 min of CPU), reuses VDSR's
# run of `make models` (or trains it), then bicubic, VDSR, ZSSR, MZSR 0/1/10 steps; rewrites the README table.
# Needs the benchmark sets (T91 + BSD200 to train, Set5 to measure): RESTORELAB_DATA or ../shared/datasets.
zero-shot: install
	$(if $(DATA),RESTORELAB_DATA=$(DATA)) $(VENV)/bin/restorelab zero-shot

clean:
	rm -rf $(VENV) runs
