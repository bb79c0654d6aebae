# All set-up happens here: `make demo` and `make test` bootstrap .venv themselves (idempotent).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.saim-installed
DEPLOY_VENV ?= .venv-deploy
DEPLOY_STAMP := $(DEPLOY_VENV)/.saim-installed
NNUNET_VENV ?= .venv-nnunet
NNUNET_STAMP := $(NNUNET_VENV)/.saim-installed
OUT ?= out
WEB_STAMP := web/dist/.built

.PHONY: setup web browser-tools deploy-tools nnunet-tools demo emulate test test-unit test-integration test-browser test-chaos chaos test-deploy lint bench bench-annotate bench-scale gpu-bench results proto totalseg clean

setup: $(STAMP) $(WEB_STAMP)

$(STAMP): requirements/base.txt requirements/dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

# The browser pages (annotator, dashboard): npm ci from the committed lock, then esbuild (web/build.mjs) into
# web/dist, which the gateway serves.
web: $(WEB_STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json web/build.mjs $(wildcard web/src/*.js) \
		$(wildcard web/public/*.html) $(wildcard web/public/assets/*)
	cd web && npm ci --no-audit --no-fund --loglevel=error && npm run build
	@touch $@

# Debian's chromium for the browser tests (tests/browser): Playwright's own browser download is not available here.
browser-tools:
	@command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" -ne 0 ] && echo sudo); \
		$$SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -q chromium; }

# Static validators for deploy/ in their own venv (checkov's dependencies must not move the runtime pins).
deploy-tools: $(DEPLOY_STAMP)

# A tool's own venv from its requirements file: $(call tool_venv,VENV,REQUIREMENTS)
define tool_venv
	@test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -m pip install -q -r $(2)
	@touch $(1)/.saim-installed
endef

$(DEPLOY_STAMP): requirements/deploy.txt
	$(call tool_venv,$(DEPLOY_VENV),$<)

# nnU-Net's dataset checker for the export test (tests/integration/test_export.py finds it at $(NNUNET_VENV)).
nnunet-tools: $(NNUNET_STAMP)

$(NNUNET_STAMP): requirements/nnunet.txt
	$(call tool_venv,$(NNUNET_VENV),$<)

# The main job on embedded defaults: the distributed demo (broker, S3, three services, virtual annotators); it leaves
# the annotated dataset behind as an nnU-Net raw dataset in $(OUT)/demo-nnunet.
demo: setup
	rm -rf $(OUT)/demo-nnunet
	$(BIN)/saim demo --report $(OUT)/demo-report.json --export $(OUT)/demo-nnunet

# The paper's emulated scenario in one process, SAIM against the classical baseline.
emulate: setup
	$(BIN)/saim emulate --data synthetic --baseline classical --seed 0 --image-size 64 \
		--report $(OUT)/emulate-report.json --plot $(OUT)/emulate-miou.png

# Unit, integration, chaos (short form: 2 iterations) and deploy tiers; the chaos summary lands in $(OUT).
test: lint deploy-tools nnunet-tools browser-tools
	SAIM_CHAOS_REPORT=$(OUT)/chaos-report.json $(BIN)/python -m pytest tests -q

test-unit: setup
	$(BIN)/python -m pytest tests/unit -q

test-integration: setup nnunet-tools
	$(BIN)/python -m pytest tests/integration -q

test-browser: setup browser-tools
	$(BIN)/python -m pytest tests/browser -q

test-chaos: setup
	SAIM_CHAOS_REPORT=$(OUT)/chaos-report.json $(BIN)/python -m pytest tests/chaos -q

# The long chaos run: 3 iterations through the same faults, 8 annotators; summary in $(OUT)/chaos-report.json.
chaos: setup
	SAIM_CHAOS_ITERATIONS=3 SAIM_CHAOS_REPORT=$(OUT)/chaos-report.json $(BIN)/python -m pytest tests/chaos -q -s

test-deploy: setup deploy-tools
	$(BIN)/python -m pytest tests/deploy -q

proto: setup
	$(BIN)/python tools/gen_protos.py

# Style, the import contracts (pyproject [tool.importlinter]) and the types (pyproject [tool.mypy]); make test runs it.
LINT_TREES = src services tests tools
lint: setup
	$(BIN)/ruff check $(LINT_TREES)
	$(BIN)/ruff format --check $(LINT_TREES)
	$(BIN)/lint-imports
	$(BIN)/mypy

# Speed/memory against the bare model (prints ratios; never part of the tests).
bench: setup
	$(BIN)/python tools/bench.py

# AMOS size on this CPU: a 1,200-series pool through the selector (cold rescoring from the preprocessed slice store
# with NextCase calls, peak RSS), the bare model, and sharded scoring with 1 and 2 scorer workers; writes
# $(OUT)/bench-scale.json (about 9 minutes).
bench-scale: setup
	$(BIN)/python tools/bench_scale.py --out $(OUT)/bench-scale.json

# A virtual annotator in the real page (chromium, gateway, annotator) annotates phantom series and the TotalSegmentator
# CT until every class reaches Dice 0.90, in three ways: slice by slice (clicks, and brush strokes for slivers), assisted
# (boxes, propagation, a walk that carries corrections on) and interpolated (key slices, interpolation between them,
# the rest reviewed); prints the interactions per series and writes $(OUT)/bench-annotate/report-<data>.json (trains
# its models the first time); then thinner phantom slices (72 over the same extent, eight series, the model trained
# on sixteen) in bench-annotate-thin. The phantom models work at the phantoms' own 96 px in-plane grid.
bench-annotate: setup browser-tools
	$(BIN)/python tools/bench_annotate.py --out $(OUT)/bench-annotate --data phantoms
	$(BIN)/python tools/bench_annotate.py --out $(OUT)/bench-annotate --data totalseg
	$(BIN)/python tools/bench_annotate.py --out $(OUT)/bench-annotate-thin --data phantoms --depth 72 --train-series 16 \
		--series 8

# One GPU: rescoring, a click and training (with its profile) at 256 and 512 px against the bare model, and the
# projected time to rescore 120k slices (tools/gpu_bench.sh also runs on a machine with torch and saim's
# requirements, without .venv; `tools/gpu_bench.sh --experiment` adds the 256 px experiment over 3 seeds).
gpu-bench: setup
	PYTHON=$(BIN)/python tools/gpu_bench.sh --out $(OUT)/gpu-bench.json

# The paper's curves over 5 seeds, one SAIM arm per selection strategy (foreground-aware random, entropy, ClaSP PE,
# MC-dropout entropy) with paired differences against fg_random, and the classical baseline, on the synthetic default
# and the TotalSegmentator data; renders docs/results.md and its plots (tools/results.py). CPU: see docs/results.md for
# time. NoC and Dice-AUC are measured at the first and last iteration only (--noc-at ends), to keep it under 2 hours.
RESULTS_ARGS = --seeds 0 1 2 3 4 --strategies fg_random,entropy,clasp_pe,mc_dropout --noc-at ends --image-size 64 \
	--threads 1 --jobs 2 --quiet
# 6 CT and 4 MR slabs in one dataset: test, validation and the initial set get both (saim.data.splits.stratified_order);
# models pre-trained on 3 slabs ignore most clicks, so answers that do are refined at test time (saim.model.refine);
# NoC sits at its 20-click cap on these slabs (docs/results.md), so it is not measured here
TOTALSEG_ARGS = --max-slices 0 --iterations 2 --stratify 'ts_(ct|mr)_' --refine-steps 20 --refine-radius 3 --no-noc
# the phantoms' pre-trained models follow most clicks: a few refinement steps, the loss on the clicked pixel
SYNTHETIC_ARGS = --iterations 2 --refine-steps 5
results: setup $(OUT)/totalseg/dataset.json
	$(BIN)/saim experiment --data synthetic $(SYNTHETIC_ARGS) $(RESULTS_ARGS) \
		--report $(OUT)/results/synthetic.json --plot $(OUT)/results/synthetic.png
	$(BIN)/saim experiment --data $(OUT)/totalseg $(TOTALSEG_ARGS) $(RESULTS_ARGS) \
		--report $(OUT)/results/totalseg.json --plot $(OUT)/results/totalseg.png
	$(BIN)/python tools/results.py docs/results.md \
		"synthetic phantoms=$(OUT)/results/synthetic.json=saim experiment --data synthetic $(SYNTHETIC_ARGS) $(RESULTS_ARGS)" \
		"TotalSegmentator CT/MR=$(OUT)/results/totalseg.json=saim experiment --data $(OUT)/totalseg $(TOTALSEG_ARGS) $(RESULTS_ARGS)"

$(OUT)/totalseg/dataset.json: $(STAMP)
	$(BIN)/saim data totalseg $(OUT)/totalseg --cache-dir .cache

totalseg: setup
	$(BIN)/saim data totalseg $(OUT)/totalseg --cache-dir .cache

clean:
	rm -rf $(OUT) .pytest_cache
