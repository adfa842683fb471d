# dagd — plain Makefile (see docs/operations.md). Targets: deps all test unit engine integration check layers valgrind bench bench-sched bench-airflow run run-demo time-run install clean
CC      ?= cc
PKGS    := libuv libcurl jansson yaml-0.1 sqlite3 libarchive libmicrohttpd libsystemd
CFLAGS  ?= -O2 -g
override CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter -Iinclude -MMD -MP -D_GNU_SOURCE -DDAGD_VERSION=\"0.1.0\"
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm
BUILD   ?= build
PYTHON  ?= /usr/bin/python3
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all

SRCS     := $(shell find src -name '*.c' ! -name main.c | sort)
OBJS     := $(SRCS:%.c=$(BUILD)/%.o)
# Unit tests, by module (tests/unit/<module>/ for src/<module>/), need no Docker engine;
# the engine tests (tests/engine/) talk to the real one. One Criterion binary per file.
UNIT_SRCS  := $(sort $(wildcard tests/unit/*/test_*.c))
UNIT_BINS  := $(UNIT_SRCS:%.c=$(BUILD)/%)
ENGINE_SRCS:= $(sort $(wildcard tests/engine/*/test_*.c))
ENGINE_BINS:= $(ENGINE_SRCS:%.c=$(BUILD)/%)

DEB_PKGS := build-essential pkg-config libuv1-dev libcurl4-openssl-dev libjansson-dev libyaml-dev \
            libsqlite3-dev libarchive-dev libcriterion-dev busybox-static python3 python3-pytest socat openssl \
            libmicrohttpd-dev libsystemd-dev systemd python3-venv \
            valgrind docker.io chromium chromium-driver python3-selenium

.PHONY: all deps test unit engine integration check layers bench bench-sched bench-airflow run run-demo time-run install clean images valgrind pydeps

all: $(BUILD)/dagd

# Installs only what is missing (Debian packages); safe to run again.
deps:
	@missing=$$(for p in $(DEB_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if command -v docker >/dev/null 2>&1; then missing=$$(echo $$missing | tr ' ' '\n' | grep -vx docker.io); fi; \
	fi; \
	if [ -n "$$(echo $$missing)" ]; then \
	  echo "deps: installing $$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing; \
	else echo "deps: all present"; fi

$(BUILD)/libdagd.a: $(OBJS)
	@mkdir -p $(@D)
	$(AR) rcs $@ $^

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

# the web UI's files are built into ui.o (.incbin), which the compiler's -MMD does not see
$(BUILD)/src/api/ui.o: $(wildcard src/api/ui/*)

$(BUILD)/dagd: $(BUILD)/src/main.o $(BUILD)/libdagd.a
	$(CC) $(CFLAGS) -o $@ $^ $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/tests/%: tests/%.c $(BUILD)/libdagd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests $(PKG_CFLAGS) -o $@ $< $(BUILD)/libdagd.a $(PKG_LIBS) -lcriterion $(LDFLAGS)

unit: $(UNIT_BINS)
	@rc=0; for t in $(UNIT_BINS); do $$t --jobs 2 || rc=1; done; exit $$rc

engine: $(ENGINE_BINS)
	@sh tests/support/ensure-dockerd.sh
	@rc=0; for t in $(ENGINE_BINS); do $$t --jobs 2 || rc=1; done; exit $$rc

# Python tools the tests use that Debian does not package (schemathesis), from PyPI.
VENV := build/venv
pydeps: $(VENV)/.done
$(VENV)/.done:
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check schemathesis
	touch $@

integration: $(BUILD)/dagd pydeps
	@sh tests/support/ensure-dockerd.sh
	DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) -m pytest -q tests/integration

test: deps
	$(MAKE) all $(UNIT_BINS) $(ENGINE_BINS)
	$(MAKE) unit
	$(MAKE) engine
	$(MAKE) integration

# The include-layer check (docs/architecture.md): every #include against the module table.
layers:
	$(PYTHON) tests/layers/check_layers.py .

# The layer check, then an ASan + UBSan build of everything and the same tests against it.
check: deps
	$(MAKE) layers
	$(MAKE) BUILD=build-san CFLAGS="-O1 -g $(SANFLAGS)" LDFLAGS="$(SANFLAGS)" unit engine integration

# The integration tests under valgrind leave out a few that mostly wait (ten times longer
# under valgrind) on paths the plain and ASan passes run too, so that the whole CI stays
# well inside its time (docs/operations.md, Tests); VALGRIND_K= runs every one.
VALGRIND_K ?= not help_on_every_verb and not kill9_at_random and not kill9_while_the_start and not log_resumes_after and not lines_rotated_away and not full_disk and not test_sensors_more and not opt_ins_allow and not file_sensor_waits
valgrind: all $(UNIT_BINS) $(ENGINE_BINS) pydeps
	@sh tests/support/ensure-dockerd.sh
	@rc=0; for t in $(UNIT_BINS) $(ENGINE_BINS); do valgrind -q --error-exitcode=9 --leak-check=full --errors-for-leak-kinds=definite --trace-children=yes --trace-children-skip="*/sh,*/docker,*/xargs,*/cp,*/rm" $$t --jobs 1 || rc=1; done; \
	DAGD_VALGRIND=1 DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) -m pytest -q tests/integration -k "$(VALGRIND_K)" || rc=1; exit $$rc

# The scheduler core at scale (docs/benchmarks.md, "Scheduler at scale"): CPU time per
# size, then instruction counts (callgrind) of the 200- and 2,000-run cases, which show a
# regression without the noise of a shared machine; it fails when the cost per task at
# 2,000 runs is over twice that at 200.
$(BUILD)/bench/bench_sched: bench/bench_sched.c tests/support/layered_dag.h $(BUILD)/libdagd.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -Itests $(PKG_CFLAGS) -o $@ $< $(BUILD)/libdagd.a $(PKG_LIBS) $(LDFLAGS)

bench-sched: $(BUILD)/bench/bench_sched
	$(BUILD)/bench/bench_sched --check
	@for n in 200 2000; do \
	  valgrind --tool=callgrind --callgrind-out-file=/dev/null $(BUILD)/bench/bench_sched --once $$n 2>&1 >/dev/null | \
	    awk -v n=$$n '/Collected/ { printf "%d %s\n", n, $$4 }'; \
	done | awk '{ per[NR] = $$2 / ($$1 * 50); \
	  printf "callgrind, %d runs (%d tasks): %s instructions, %d per task\n", $$1, $$1 * 50, $$2, per[NR] } \
	  END { if (NR != 2) { print "bench-sched: callgrind gave no count"; exit 1 } \
	    printf "instructions per task, 2000 runs over 200: %.2fx (target <= 2x)\n", per[2] / per[1]; \
	    if (per[2] > 2 * per[1]) exit 1 }'

bench: deps all bench-sched
	DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) bench/bench_chain.py
	DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) bench/bench_serve.py
	DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) bench/bench_swarm.py
	DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) bench/bench_scale.py

# dagd beside Apache Airflow (docs/benchmarks.md, "Side by side with Airflow"). Not part of
# `make bench`, and nothing CI runs calls it: it installs Airflow 2.10 from PyPI into
# AIRFLOW_VENV (the versions of bench/airflow-constraints.txt) and PostgreSQL's server from
# Debian when missing.
AIRFLOW_VENV ?= $(BUILD)/airflow-venv
$(AIRFLOW_VENV)/.installed: bench/airflow-constraints.txt
	rm -rf $(AIRFLOW_VENV)
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install -q --progress-bar off -c bench/airflow-constraints.txt \
	  apache-airflow==2.10.5 apache-airflow-providers-docker psycopg2-binary
	touch $@

bench-airflow: deps all $(AIRFLOW_VENV)/.installed
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  echo "bench-airflow: installing postgresql"; SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql; }
	DAGD_BIN=$(abspath $(BUILD)/dagd) $(PYTHON) bench/bench_airflow.py --airflow $(abspath $(AIRFLOW_VENV))/bin/airflow

# The RappelConso pipeline (examples/rappel_conso.yml, docs/examples.md) for one day on the
# offline stack: the images it needs (built the first time only), Postgres and the broker,
# the sample records API, `dagd run`, then the counts. DAY=YYYY-MM-DD picks another day.
# `make time-run` measures a first run: the stack and its data removed, then `make run`
# timed (images already built are kept: their first build is timed by `make images`).
RUN_IMAGES := image-loader image-postgres image-broker image-producer image-spark
DAY ?= 2024-03-05
run: deps all
	@$(MAKE) -s --no-print-directory $(RUN_IMAGES)
	bash examples/run-rappel.sh $(abspath $(BUILD)/dagd) $(DAY)

time-run: deps all
	bash examples/run-rappel.sh --down
	@start=$$(date +%s); $(MAKE) --no-print-directory run; rc=$$?; \
	  echo "time-run: make run took $$(( $$(date +%s) - start ))s (exit $$rc), from no services, no data, no state"; \
	  exit $$rc

# The busybox demo (examples/daily_sales.yml): no services, one small image.
run-demo: deps all
	bash examples/run-demo.sh $(abspath $(BUILD)/dagd)

install: all
	install -Dm755 $(BUILD)/dagd $(DESTDIR)/usr/local/bin/dagd

clean:
	rm -rf build build-san

include images/services.mk

-include $(shell find $(BUILD) -path '$(BUILD)/airflow-venv*' -prune -o -name '*.d' -type f -print 2>/dev/null)
