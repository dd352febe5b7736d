# engaged: `make serve` runs the service on embedded defaults; `make test` runs lint, types and the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSPKGS := swaks postfix nginx-light wrk chromium strace
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: serve test lint pytest wheel bench sysdeps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# System packages the tests use; installed only when missing and we are root.
sysdeps:
	@missing=""; \
	command -v swaks >/dev/null || missing="$$missing swaks"; \
	perl -MNet::SSLeay -e1 2>/dev/null || missing="$$missing libnet-ssleay-perl"; \
	command -v smtp-sink >/dev/null || [ -x /usr/sbin/smtp-sink ] || missing="$$missing postfix"; \
	command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v strace >/dev/null || missing="$$missing strace"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	    echo "installing:$$missing"; \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "not root: tests needing$$missing will skip"; \
	  fi; \
	fi

serve: $(STAMP)
	$(BIN)/engaged serve

lint: $(STAMP)
	$(BIN)/ruff check engaged tests bench
	$(BIN)/mypy engaged tests
	$(BIN)/lint-imports

# Test processes: most tests wait on servers, sockets and disks, so three share two cores well. Each file runs
# in one process (--dist loadfile), so a module's shared server is started once. PYTEST_WORKERS=0: no xdist.
PYTEST_WORKERS ?= 3

pytest: $(STAMP) sysdeps
	$(BIN)/pytest -q $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS) --dist loadfile)

test: $(STAMP) sysdeps lint pytest wheel

# The wheel alone, without extras, in a fresh virtualenv: check-config, serve, one message, clean stop.
wheel: $(STAMP)
	$(BIN)/python tests/packaging/check_wheel.py

bench: $(STAMP) sysdeps
	@for b in bench/[!_]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) engaged-data .mypy_cache .ruff_cache .pytest_cache
