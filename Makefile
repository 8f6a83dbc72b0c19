# Quench: `make demo` runs the stack with the lab and a live case; `make test` runs
# lint, type checks and the whole test suite. Both create the virtualenv when needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The lock: every package the venv (test) and the image (runtime) install, pinned with
# its hashes. pyproject.toml's ranges say what Quench accepts; only `make lock` reads them.
TEST_LOCK := requirements/test.txt
RUNTIME_LOCK := requirements/runtime.txt

.PHONY: install lock demo up test lint typecheck pytest test-e2e test-browser browser \
	web-ui-screenshot record-histories clean

# A new venv holding exactly the lock: each file checked against its hash, nothing chosen
# from a range, nothing left from an earlier install. Quench itself is installed editable,
# built by the lock's setuptools.
$(INSTALLED): $(TEST_LOCK) pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Quench needs Python 3.11, found " + sys.version.split()[0]) if sys.version_info[:2] != (3, 11) else None'
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(TEST_LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(INSTALLED)

install: $(INSTALLED)

# Moves the lock on purpose: `make lock` to the newest releases pyproject.toml allows,
# `make lock ARGS='--upgrade-package moto'` for one package only (after adding or changing
# a dependency in pyproject.toml, name it so). Then `make test`, and commit requirements/.
# The test lock comes first and the runtime lock takes its versions, so the image runs
# what the suite ran; [build-system]'s setuptools goes in both, for the builds without
# isolation.
LOCK_COMPILE = $(BIN)/python -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
	| $(BIN)/uv pip compile --quiet pyproject.toml - --universal --generate-hashes \
		--python-version 3.11 --custom-compile-command 'make lock' $(or $(ARGS),--upgrade)

lock: install
	$(LOCK_COMPILE) --extra test --output-file $(TEST_LOCK)
	$(LOCK_COMPILE) --constraints $(TEST_LOCK) --output-file $(RUNTIME_LOCK)

demo: install
	$(BIN)/python starter.py up

up: demo

test: lint typecheck pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy .

pytest: install
	$(BIN)/pytest

test-e2e: install
	$(BIN)/pytest -m e2e

test-browser: install
	$(BIN)/pytest -m browser

# Debian's Chromium and ChromeDriver for the Web UI browser test (tests/web_ui). Without
# them that test skips; with QUENCH_REQUIRE_BROWSER=1 (as .ci/run sets) it fails.
CHROMIUM ?= $(or $(QUENCH_CHROMIUM),/usr/bin/chromium)
CHROMEDRIVER ?= $(or $(QUENCH_CHROMEDRIVER),/usr/bin/chromedriver)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

browser:
	@if [ -x "$(CHROMIUM)" ] && [ -x "$(CHROMEDRIVER)" ]; then \
		echo "browser: $(CHROMIUM) and $(CHROMEDRIVER) present"; \
	else \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver; \
	fi

# The README's screenshot of a case in the Web UI, from the browser test's own look at one.
web-ui-screenshot: install
	QUENCH_REQUIRE_BROWSER=1 QUENCH_TEST_ARTIFACTS=$(CURDIR)/test-artifacts \
		$(BIN)/pytest -m browser -k case_page
	mkdir -p docs
	cp test-artifacts/web-ui/case-details.png docs/web-ui-case.png

# Re-record tests/histories: the workflow tests and the lab cases (after an intended change).
record-histories: install
	QUENCH_RECORD_HISTORIES=1 $(BIN)/pytest tests/workflows tests/e2e

clean:
	rm -rf .quench

# The finding storm (benchmarks/finding_storm.py): 10,000 findings over 200 credentials
# through the webhook and straight through the SDK. `make benchmark ARGS=--quick` for a look.
.PHONY: benchmark
benchmark: install
	$(BIN)/python -m benchmarks.finding_storm $(ARGS)

# The CloudTrail scan (benchmarks/cloudtrail_scan.py): Quench's credential-scoped scan
# against decompression alone and the plain json.loads scan, over 1,000,000 records.
# `make benchmark-scan ARGS=--quick` for a look.
.PHONY: benchmark-scan
benchmark-scan: install
	$(BIN)/python -m benchmarks.cloudtrail_scan $(ARGS)

# The fault matrix (benchmarks/fault_matrix.py): each AWS call of a lab case failed with each
# of the lab's faults, on a fresh stack each, and whether the case still ends honestly.
# About 80 s a run; a subset with e.g. ARGS='--scenario ec2-role --faults access_denied'.
.PHONY: fault-matrix
fault-matrix: install
	$(BIN)/python -m benchmarks.fault_matrix $(ARGS)

# The chaos run (benchmarks/chaos.py): the worker SIGKILLed at every activity boundary of a
# lab case and the Temporal server once mid-case, against an undisturbed run; writes
# chaos.md. A few minutes a scenario; one with e.g. ARGS='--scenario ec2-role'.
.PHONY: chaos
chaos: install
	$(BIN)/python -m benchmarks.chaos $(ARGS)

# Time to contain (benchmarks/time_to_contain.py): 1, 10 and 20 lab-shaped cases at once on
# the embedded stack with a policy that contains on its own, from the webhook's 202 to the
# revocation readable in AWS, the instance running again and the rotation verified (and a
# user key inactive with its tokens denied), against the floor of one workflow and one
# PutRolePolicy on the same server. A few minutes; e.g. ARGS='--cases 1 --path role'.
.PHONY: time-to-contain
time-to-contain: install
	$(BIN)/python -m benchmarks.time_to_contain $(ARGS)
