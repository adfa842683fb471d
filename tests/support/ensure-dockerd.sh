#!/bin/sh
# Make sure a Docker engine answers before the engine and integration tests run: when
# DOCKER_HOST is unset, the docker CLI is installed and the local engine does not answer,
# start the installed dockerd in the background and wait for it (up to 60 s). The Python
# tests do the same for themselves (tests/integration/conftest.py); the C engine tests
# run first and need it too. Prints what it did; fails only when an engine cannot be had.
if ! command -v docker >/dev/null 2>&1; then
    echo "ensure-dockerd: the docker CLI is not installed" >&2
    exit 1
fi
if timeout 10 docker version >/dev/null 2>&1; then exit 0; fi
if [ -n "$DOCKER_HOST" ]; then
    echo "ensure-dockerd: the engine at DOCKER_HOST=$DOCKER_HOST does not answer" >&2
    exit 1
fi
if ! command -v dockerd >/dev/null 2>&1; then
    echo "ensure-dockerd: the engine does not answer and dockerd is not installed" >&2
    exit 1
fi
log=$(mktemp /tmp/dagd-tests-dockerd-XXXXXX.log)
echo "ensure-dockerd: the local engine does not answer; starting dockerd (log $log)"
setsid dockerd >"$log" 2>&1 </dev/null &
i=0
while [ $i -lt 60 ]; do
    if timeout 5 docker version >/dev/null 2>&1; then exit 0; fi
    sleep 1
    i=$((i + 1))
done
echo "ensure-dockerd: dockerd did not answer within 60 s; its log:" >&2
tail -20 "$log" >&2
exit 1
