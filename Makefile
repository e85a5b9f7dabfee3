# The ZEO cluster bundle.  `make run` and `make test` are all a user needs;
# see README.txt.
PYTHON ?= python3
# A local.cfg (the operator's settings; client.cfg on a client host) is
# what bootstrap.py builds when there is one.
BUILD_INPUTS := bootstrap.py buildout.cfg client.cfg plone.cfg $(wildcard local.cfg) \
	$(wildcard etc/*.cfg etc/*.in etc/zope/*.cfg etc/plone/*.cfg etc/plone/*.conf) src/Products.ZEOClient/pyproject.toml

.PHONY: build run start stop restart status logreopen test bench shootout soak plone-pins clean distclean

# bin/buildout is rerun only when its inputs changed: a no-op build is instant.
.installed.cfg: $(BUILD_INPUTS)
	$(PYTHON) bootstrap.py
	@touch .installed.cfg

build: .installed.cfg

run: build
	bin/cluster run

start: build
	bin/cluster start

stop:
	@if [ -x bin/cluster ]; then bin/cluster stop; else echo "not built: nothing to stop"; fi

# One instance at a time, the others serving through the balancer.
restart: build
	bin/cluster restart --rolling

status:
	@bin/cluster status

# After log rotation: the server reopens its log (the instances notice
# moved files by themselves).
logreopen:
	@if [ -x bin/zeoserver ]; then bin/zeoserver logreopen; \
	else echo "no ZEO server on this host (client.cfg): the instances reopen their logs by themselves"; fi

# Unit tests first, then the end-to-end layers (they start real clusters in
# temporary folders, never this checkout's var/ or ports).
test: build
	bin/test $(TESTFLAGS)

# Side-by-side figures (a few minutes); var/bench/results.json.
bench: build
	bin/benchpy bench/bench.py $(BENCHFLAGS)

# zodbshootout (add, update, cold, warm, hot at 1 and 100 objects, 1 and
# 2 processes) on FileStorage, ZEO as shipped, the bundle's ZEO (direct
# calls off and on) and RelStorage on PostgreSQL, side by side;
# var/shootout/results.json.  SHOOTOUTFLAGS=--smoke for a minute's check.
shootout: build
	bin/benchpy bench/shootout.py $(SHOOTOUTFLAGS)

# Mixed reads and writes through both instances for 5 minutes while the
# server restarts twice; checks that nothing acknowledged is lost and
# bounds memory growth (exit 1 otherwise); var/soak/results.json.  Not
# part of `make test`.  SOAKFLAGS="--seconds 60" for a shorter run.
soak: build
	bin/zopepy bench/soak.py $(SOAKFLAGS)

# The Plone profile's pins (etc/plone/versions.cfg) from
# etc/plone/requirements.txt, resolved by pip against the bundle's pins.
plone-pins: build
	.venv/bin/python etc/plone/pins.py

# Build output only; var/ (the database, logs, password) is kept.
clean:
	@if [ -x bin/cluster ]; then bin/cluster stop >/dev/null 2>&1 || true; fi
	rm -rf .venv bin parts eggs develop-eggs downloads .installed.cfg \
		.mr.developer.cfg src/Products.ZEOClient/src/*.egg-info

# Also the data in var/: asks first unless FORCE=1.
distclean:
	@if [ "$(FORCE)" != "1" ]; then \
		printf 'Delete the database, blobs, caches and logs in var/? [y/N] '; \
		read answer; [ "$$answer" = y ] || { echo "kept var/"; exit 1; }; \
	fi
	$(MAKE) clean
	find var -mindepth 1 -maxdepth 1 ! -name README -exec rm -rf {} +
