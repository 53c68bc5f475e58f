# strato: `make run` sets up and serves on 127.0.0.1; `make test` sets up and tests.
STATE ?= $(CURDIR)/state
PORT ?= 8787
CONF = $(STATE)/strato.conf
STRATO = .venv/bin/strato
B ?=

.PHONY: run setup test test-schedules-long lint bench conformance clean

setup:
	@scripts/setup.sh

run: setup
	@$(STRATO) init --state-path $(STATE) --port $(PORT)
	@$(STRATO) db upgrade --config $(CONF)
	@$(STRATO) bootstrap --config $(CONF)
	@$(STRATO) guest --config $(CONF)
	@echo "strato: try 'openstack --os-cloud strato token issue' from another shell"
	@exec $(STRATO) serve --config $(CONF)

test:
	@scripts/test.sh

# The snapshot-schedule proof at full length: every minute for 10 minutes, keep 3, a
# kill -9 and restart in the middle (about 12 minutes; not part of `make test`).
test-schedules-long:
	@scripts/setup.sh --test
	@d=$$(mktemp -d /tmp/st.XXXXXX); .venv/bin/python -m pytest -n 0 -q --basetemp="$$d" \
	    tests/compute/long_schedules.py; rc=$$?; rm -rf "$$d"; exit $$rc

lint:
	@.venv/bin/ruff check strato tests bench

# Sets up what the benchmarks need (test extras; Ceph for B=ceph or all), as `make test`.
bench:
	@scripts/bench.sh $(B)

# OpenStack's Tempest (compute, image, volume, identity API tests) against a fresh
# server: conformance/results/latest.json. Long; not part of `make test`. R=regex.
conformance:
	@scripts/conformance.sh $(if $(R),--regex '$(R)')

clean:
	rm -rf .venv $(STATE)
