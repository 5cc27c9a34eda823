# interestflow: `make demo` runs the nightly flow on the shipped sample, `make test` runs the tests.
# Both create .venv and install everything they need (torch pinned to the 2.13.0 CPU build).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
# the ephemeral Prefect API server gets 120 s (Prefect's default: 20) to start on a loaded machine
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 120
export DO_NOT_TRACK := 1
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export OMP_WAIT_POLICY := PASSIVE

.PHONY: install demo test test-fast lint format bench-pipeline bench-quality bench-speed bench-scale bench-text bench-profiles bench-chaos bench-behaviour bench-reviews bench-serve bench-fresh clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/interestflow demo

# The browser test's headless Chromium: Debian's package (Playwright's own download needs a
# network this machine does not have).
CHROMIUM := /usr/bin/chromium

APT := $(shell [ "$$(id -u)" = 0 ] && echo apt-get || echo sudo -n apt-get)

$(CHROMIUM):
	export DEBIAN_FRONTEND=noninteractive; $(APT) install -y -q chromium >/dev/null \
		|| ($(APT) update -q >/dev/null && $(APT) install -y -q chromium >/dev/null) \
		|| echo "chromium could not be installed: the browser test fails in CI and skips elsewhere"

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check .
	$(BIN)/pytest -q -n 2 --dist loadfile --durations=25

test-fast: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-pipeline: $(STAMP)
	$(BIN)/python bench/pipeline.py --lake bench/out/pipeline

bench-quality: $(STAMP)
	$(BIN)/python bench/quality.py --lake bench/out/quality --families mf lstm cnn bert

bench-behaviour: $(STAMP)
	$(BIN)/python bench/behaviour.py --lake bench/out/behaviour --families mf lstm cnn bert

bench-reviews: $(STAMP)
	$(BIN)/python bench/reviews.py --out bench/out/reviews

bench-speed: $(STAMP)
	$(BIN)/python bench/speed.py --lake bench/out/speed

bench-text: $(STAMP)
	$(BIN)/python bench/text.py --lake bench/out/text

bench-profiles: $(STAMP)
	$(BIN)/python bench/profiles.py --lake bench/out/profiles

bench-serve: $(STAMP)
	$(BIN)/python bench/serve.py --lake bench/out/quality --out bench/out/serve

bench-fresh: $(STAMP)
	$(BIN)/python bench/fresh.py --out bench/out/fresh

bench-chaos: $(STAMP)
	$(BIN)/python bench/chaos.py --out bench/out/chaos

bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py --out bench/out/scale

clean:
	rm -rf var bench/out .pytest_cache
