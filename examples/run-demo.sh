#!/usr/bin/env bash
# The demo behind `make run-demo`: make sure a Docker engine answers, build the local demo
# image (no registry needed), validate the example DAGs, run examples/daily_sales.yml
# for yesterday, then say where its state and logs are.
#
# Usage: bash examples/run-demo.sh /absolute/path/to/dagd
set -euo pipefail

DEMO_IMAGE=dagd-demo/busybox:1
PROG=run-demo
# shellcheck source=examples/engine.sh
. "$(dirname "$0")/engine.sh"

[ $# -eq 1 ] || die "usage: bash examples/run-demo.sh /absolute/path/to/dagd"
DAGD=$1
[ -x "$DAGD" ] || die "$DAGD is not an executable file (build it with 'make')"
case $DAGD in /*) ;; *) DAGD=$PWD/$DAGD ;; esac

cd "$(dirname "$0")/.."

# The image holds only a statically linked busybox; Debian's busybox-static ships one.
find_static_busybox() {
    local bb
    for bb in $(dpkg -L busybox-static 2>/dev/null | grep '/busybox$') /bin/busybox /usr/bin/busybox; do
        [ -x "$bb" ] || continue
        if command -v readelf >/dev/null 2>&1 && readelf -l "$bb" 2>/dev/null | grep -q 'INTERP'; then
            continue # dynamically linked: would not run in an image built FROM scratch
        fi
        echo "$bb"
        return 0
    done
    return 1
}

build_demo_image() {
    local bb ctx id
    bb=$(find_static_busybox) ||
        die "no statically linked busybox found; 'make deps' installs Debian's busybox-static"
    ctx=$(mktemp -d)
    cp images/demo/Dockerfile "$ctx/Dockerfile"
    cp "$bb" "$ctx/busybox"
    if ! id=$(DOCKER_BUILDKIT=0 docker build -q -t "$DEMO_IMAGE" "$ctx" 2>"$ctx/build.err"); then
        cat "$ctx/build.err" >&2
        rm -rf "$ctx"
        die "building $DEMO_IMAGE failed"
    fi
    rm -rf "$ctx"
    echo "$DEMO_IMAGE is ${id#sha256:}"
}

ensure_engine
say "Docker engine: $(docker version --format 'server {{.Server.Version}}, API {{.Server.APIVersion}}')"

say "Building $DEMO_IMAGE from images/demo/Dockerfile"
build_demo_image

say "dagd validate examples/"
"$DAGD" validate examples/

STATE=$PWD/.dagd-state
DATE=$(date -u -d yesterday +%F)
say "dagd run examples/daily_sales.yml --state ./.dagd-state --date $DATE"
rc=0
"$DAGD" run examples/daily_sales.yml --state "$STATE" --date "$DATE" || rc=$?

logs=$STATE/logs/daily_sales
run_dir=
if [ -d "$logs" ]; then
    run_dir=$(ls -1td "$logs"/*/ 2>/dev/null | head -n 1 || true)
    run_dir=${run_dir%/}
fi

say "Where to look next"
cat <<EOF
State database (SQLite, WAL):  $STATE/dagd.db
  tables dag_runs, task_instances, task_tries; for example (sqlite3 is Debian's sqlite3 package)
  sqlite3 $STATE/dagd.db 'select task_id, state, try_number, output from task_instances order by start_ms'
Task logs of this run:          ${run_dir:-$logs/<run_id>}/<task>/<try>.log
EOF
if [ -n "$run_dir" ]; then
    echo "  e.g. cat $run_dir/quality_check/1.log   (the try that failed on purpose)"
fi
cat <<EOF
Run one task alone (no dependencies, nothing stored):
  $DAGD test examples/daily_sales.yml generate_raw_sales --date $DATE
Run again with other parameters:
  $DAGD run examples/daily_sales.yml --state ./.dagd-state --conf '{"min_revenue": 50000}'
Run it as a service (schedules, REST API on 127.0.0.1:8080, client verbs):
  $DAGD serve --dags examples --state ./.dagd-state &
  $DAGD dags --state ./.dagd-state; $DAGD trigger daily_sales --wait --state ./.dagd-state
Docs: README.md, docs/dags.md (DAG files), docs/cli.md (commands), docs/daemon.md, docs/api.md
EOF

if [ "$rc" -ne 0 ]; then
    echo
    echo "run-demo: dagd run exited with status $rc" >&2
fi
exit "$rc"
