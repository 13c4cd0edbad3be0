# OpenStack++ — every target installs what it needs (apt, venv, daemons, test guest), idempotently.
SHELL := /bin/bash
VENV  := $(CURDIR)/.venv
PY    := $(VENV)/bin/python
STATE := $(CURDIR)/.state
GUEST := $(STATE)/guest
export CLOUDLET_HOME ?= $(STATE)/cloudlet
export CLOUDLET_GUEST_DIR := $(GUEST)

.PHONY: all host venv guest demo test bench tempest stack stack-down clean

all: test

host:
	@./scripts/setup-host.sh

venv: $(VENV)/.installed
$(VENV)/.installed: setup.py requirements.txt requirements-test.txt requirements-openstack.txt constraints.txt
	@mkdir -p $(STATE)
	@test -x $(PY) || python3 -m venv $(VENV)
	@echo "venv: installing Python packages (log: $(STATE)/venv.log)"
	@( $(PY) -m pip install -q --upgrade pip && \
	   $(PY) -m pip install -q -c constraints.txt -r requirements.txt -r requirements-test.txt \
	       -r requirements-openstack.txt -e . ) > $(STATE)/venv.log 2>&1 \
	   || { tail -20 $(STATE)/venv.log; exit 1; }
	@touch $@

guest: host $(GUEST)/disk.raw
$(GUEST)/disk.raw: stack/guest/build.sh stack/guest/init.sh
	@./stack/guest/build.sh $(GUEST)

# The Debian 12 guest (stack/guest/debian), cached outside the clone: ~1.5-2 min once per builder hash.
guest-debian: host venv
	@$(PY) -m stack.guest.debian

demo: host venv guest
	@$(PY) -m scripts.demo

test: host venv guest
	@$(PY) -m pytest -q --durations=25 tests

bench: host venv guest
	@$(PY) -m bench.run
	@$(PY) -m bench.handoff

# Coverage-guided fuzzing of the engine's parsers (tests/fuzz), FUZZ_SECONDS in all.
.PHONY: fuzz
FUZZ_SECONDS ?= 600
fuzz: venv
	@$(PY) -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

tempest: stack
	@$(PY) -m stack.tempest

stack: host venv guest
	@$(PY) -m stack up --cloudlet

stack-down:
	@test -x $(PY) && $(PY) -m stack down || true

clean: stack-down
	rm -rf $(STATE)
