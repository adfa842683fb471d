# Shell helpers the example scripts share (sourced, not run): messages, and a Docker
# engine that answers, started when it is installed locally but not running.
# The caller sets PROG (its name in messages) before sourcing.
DOCKERD_WAIT=30 # seconds to wait for an engine we started

die() {
    printf '%s: %s\n' "${PROG:-example}" "$*" >&2
    exit 1
}
say() { printf '\n==> %s\n' "$*"; }

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
        local log=${TMPDIR:-/tmp}/dagd-example-dockerd.log
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

