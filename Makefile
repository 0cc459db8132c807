# Two commands are the contract: `make demo` and `make test`. Both build .venv/ when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# the demo needs the package; the tests also need the test extras (pytest, ruff, deepspeed)
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test
# The torch wheel installed when no torch is importable. On these machines this exact version is a CPU
# wheel on local disk; users who already have torch in the venv keep theirs (override TORCH_SPEC=...).
TORCH_SPEC ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

MUTANTS_STAMP := $(VENV)/.installed-mutants

.PHONY: demo test lint install base lock clean mutants

# scripts/install_venv.py: the versions pinned in requirements/*.lock, with uv when it can (given pip's
# own index settings), else pip
$(DEMO_STAMP): pyproject.toml requirements/demo.lock scripts/install_venv.py
	$(PYTHON) scripts/install_venv.py $(VENV) "$(TORCH_SPEC)" . requirements/demo.lock
	@touch $@

$(TEST_STAMP): pyproject.toml requirements/test.lock scripts/install_venv.py
	$(PYTHON) scripts/install_venv.py $(VENV) "$(TORCH_SPEC)" ".[test]" requirements/test.lock
	@touch $@ $(DEMO_STAMP)

# re-pin requirements/*.lock after changing dependencies in pyproject.toml
lock: $(DEMO_STAMP)
	$(PYTHON) scripts/install_venv.py --compile $(VENV) - requirements/demo.lock
	$(PYTHON) scripts/install_venv.py --compile $(VENV) test requirements/test.lock

install: $(TEST_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/corewarding demo

test: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q --durations=20 tests

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# mutation testing of the core logic (not part of `make test` or CI; a fresh run about 16 minutes on 2 cores): mutmut
# as configured in pyproject.toml [tool.mutmut], then mutants/report.md and mutants/report.json.
# MUTANTS_ARGS passes options to scripts/mutants.py, e.g. MUTANTS_ARGS="--fresh" or a mutant glob.
$(MUTANTS_STAMP): $(TEST_STAMP)
	$(PYTHON) scripts/install_venv.py $(VENV) "$(TORCH_SPEC)" ".[test,mutants]" requirements/test.lock
	@touch $@

mutants: $(MUTANTS_STAMP)
	nice $(BIN)/python scripts/mutants.py $(MUTANTS_ARGS)

# rebuild the micro-world base model shipped in src/corewarding/microworld/shipped_base/ (about 2 min)
base: $(DEMO_STAMP)
	$(BIN)/corewarding build-base

clean:
	rm -rf $(VENV) runs .pytest_cache mutants
