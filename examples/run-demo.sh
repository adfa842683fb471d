#!/usr/bin/env bash
# The demo behind `make run`: make sure a Docker engine answers, build the local demo
# image (no registry needed), validate the example DAGs, run examples/daily_sales.yml
# for yesterday, then say where its state and logs are.
#
# Usage: bash examples/run-demo.sh /absolute/path/to/dagd
set -euo pipefail

DEMO_IMAGE=dagd-demo/busybox:1
DOCKERD_WAIT=30 # seconds to wait for an engine we started

die() {
    printf 'run-demo: %s\n' "$*" >&2
    exit 1
}
say() { printf '\n==> %s\n' "$*"; }

[ $# -eq 1 ] || die "usage: bash examples/run-demo.sh /absolute/path/to/dagd"
DAGD=$1
[ -x "$DAGD" ] || die "$DAGD is not an executable file (build it with 'make')"
case $DAGD in /*) ;; *) DAGD=$PWD/$DAGD ;; esac

cd "$(dirname "$0")/.."

as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        return 1
    fi
}

engine_up() { docker info >/dev/null 2>&1; }

# Is DOCKER_HOST (if set) the local default socket, i.e. one we could start ourselves?
local_engine() {
    case ${DOCKER_HOST:-unix:///var/run/docker.sock} in
    unix:///var/run/docker.sock | unix:///run/docker.sock) return 0 ;;
    *) return 1 ;;
    esac
}

ensure_engine() {
    command -v docker >/dev/null 2>&1 ||
        die "the docker command is missing; 'make deps' installs Debian's docker.io"
    engine_up && return 0

    if ! local_engine; then
        die "no Docker engine answers at DOCKER_HOST=$DOCKER_HOST ($(docker info 2>&1 | tail -n 1))"
    fi
    if [ -S /var/run/docker.sock ] && [ "$(id -u)" != 0 ] &&
        docker info 2>&1 | grep -qi 'permission denied'; then
        die "no permission on /var/run/docker.sock: add yourself to the docker group" \
            "(sudo usermod -aG docker $USER, then log in again) or run as root"
    fi

    say "Docker engine not running; starting it"
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl start docker || true
    fi
    if ! engine_up; then
        command -v dockerd >/dev/null 2>&1 ||
            die "no Docker engine is running and dockerd is not installed ('make deps' installs docker.io)"
        local log=${TMPDIR:-/tmp}/dagd-demo-dockerd.log
        as_root sh -c "nohup dockerd >'$log' 2>&1 &" ||
            die "cannot start dockerd: it needs root (run as root, or install sudo)"
        echo "dockerd started in the background; its log is $log"
    fi
    local i
    for ((i = 0; i < DOCKERD_WAIT * 2; i++)); do
        engine_up && return 0
        sleep 0.5
    done
    die "the Docker engine did not come up within ${DOCKERD_WAIT}s: $(docker info 2>&1 | tail -n 1)"
}

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
