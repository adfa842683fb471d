#!/usr/bin/env bash
# The pipeline behind `make run` (docs/examples.md): the RappelConso DAG
# (examples/rappel_conso.yml) for one day on the offline stack.
#
#   1. Postgres and the broker from compose/ (project dagd-rappel, network pipeline),
#      left running for the next run and for you to look at;
#   2. the sample records API (examples/rappel_conso/sample_api.py in dagd/producer) as
#      the container dagd-rappel-api, reachable on the network as rappel-api:8000;
#   3. `dagd run examples/rappel_conso.yml --date DAY` with the connection `warehouse`;
#   4. what went through Kafka, what Postgres holds, and where to look.
# The images are made before by the Makefile (`make run` depends on them).
#
# Usage: bash examples/run-rappel.sh /absolute/path/to/dagd [DAY]     (DAY: YYYY-MM-DD,
# default 2024-03-05; the sample holds 2024-03-04 to 2024-03-07)
#        bash examples/run-rappel.sh --down      stop and remove the services and the data
set -euo pipefail

PROG=run-rappel
# shellcheck source=examples/engine.sh
. "$(dirname "$0")/engine.sh"
cd "$(dirname "$0")/.."

PROJECT=dagd-rappel
NETWORK=pipeline
API=dagd-rappel-api
PG_PASSWORD=etl
STATE=$PWD/.dagd-state-rappel
CODE=$PWD/examples/rappel_conso
export DAGD_NETWORK=$NETWORK POSTGRES_PASSWORD=$PG_PASSWORD
# dagd's own service is not started here, but compose wants its secret's file to exist
export DAGD_TOKEN_PATH=$STATE/compose-token-unused
mkdir -p "$STATE" && touch "$DAGD_TOKEN_PATH"
compose() { docker-compose -p "$PROJECT" -f compose/docker-compose.yml -f compose/docker-compose.offline.yml "$@"; }

if [ "${1:-}" = --down ]; then
    docker rm -f "$API" >/dev/null 2>&1 || true
    compose down -v 2>&1 | grep -v 'not found' || true
    rm -rf "$STATE"
    exit 0
fi

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: bash examples/run-rappel.sh /absolute/path/to/dagd [YYYY-MM-DD] | --down"
DAGD=$1
DAY=${2:-2024-03-05}
[ -x "$DAGD" ] || die "$DAGD is not an executable file (build it with 'make')"
[[ $DAY =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}$ ]] || die "the day must be YYYY-MM-DD, not '$DAY'"
command -v docker-compose >/dev/null 2>&1 || die "docker-compose is missing ('make images' installs Debian's)"
ensure_engine

healthy() { # container -> wait until its healthcheck says healthy
    local c=$1 i s
    for ((i = 0; i < 120; i++)); do
        s=$(docker inspect -f '{{.State.Health.Status}}' "$c" 2>/dev/null || echo missing)
        [ "$s" = healthy ] && return 0
        [ "$s" = unhealthy ] && break
        sleep 0.5
    done
    docker logs --tail 20 "$c" >&2 || true
    die "$c is $s"
}

say "Services: Postgres and the broker (compose project $PROJECT, network $NETWORK)"
compose up -d postgres broker
PG=$(docker inspect -f '{{.Name}}' "$(compose ps -q postgres)") && PG=${PG#/}
BROKER=$(docker inspect -f '{{.Name}}' "$(compose ps -q broker)") && BROKER=${BROKER#/}
healthy "$PG"
healthy "$BROKER"

say "Sample RappelConso API: $API (rappel-api:8000 on $NETWORK), from examples/rappel_conso/sample_records.json"
if [ "$(docker inspect -f '{{.State.Running}}' "$API" 2>/dev/null)" != true ]; then
    docker rm -f "$API" >/dev/null 2>&1 || true
    docker run -d --name "$API" --network "$NETWORK" --network-alias rappel-api \
        -v "$CODE:/opt/rappel:ro" dagd/producer:local python3 /opt/rappel/sample_api.py --port 8000 >/dev/null
fi
probe='import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)'
url=http://127.0.0.1:8000/api/explore/v2.1/catalog/datasets/rappelconso0/records?limit=1
for ((i = 0; ; i++)); do
    docker exec "$API" python3 -c "$probe" "$url" 2>/dev/null && break
    ((i < 40)) || { docker logs "$API" >&2; die "the sample API did not answer"; }
    sleep 0.25
done

say "dagd run examples/rappel_conso.yml --date $DAY --state ./.dagd-state-rappel"
export DAGD_CONN_WAREHOUSE="postgres://etl:$PG_PASSWORD@postgres:5432/analytics"
rc=0
"$DAGD" run examples/rappel_conso.yml --date "$DAY" --state "$STATE" \
    --conf "{\"code_dir\": \"$CODE\"}" || rc=$?

run_dir=$(ls -1td "$STATE"/logs/rappel_conso/*/ 2>/dev/null | head -n 1 || true)
run_dir=${run_dir%/}
last_line() { # the JSON line of the last try's log of a task of this run
    local f
    f=$(ls -1 "$run_dir/$1"/*.log 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$f" ]; then { grep '^{' "$f" || true; } | tail -n 1; fi
}
field() { python3 -c 'import json, re, sys
m = re.search(r"\{.*\}", sys.stdin.read())
print(json.loads(m.group(0)).get(sys.argv[1], "?") if m else "?")' "$1"; }

published=$(last_line produce | field published)
inserted=$(last_line load | field inserted)
in_topic=$(docker run --rm --network "$NETWORK" -v "$CODE:/opt/rappel:ro" dagd/producer:local \
    python3 /opt/rappel/topic_count.py | field messages)
psql_line="docker exec -it $PG psql -U etl -d analytics"
day_rows=$(docker exec "$PG" psql -U etl -d analytics -Atc \
    "select count(*) from rappel_conso where date_de_publication = '$DAY'" 2>/dev/null || echo "?")
all_rows=$(docker exec "$PG" psql -U etl -d analytics -Atc "select count(*) from rappel_conso" 2>/dev/null || echo "?")

say "What went through"
cat <<EOF
Kafka:    this run published $published records of $DAY to the topic rappel_conso,
          which holds $in_topic messages in all (the broker keeps them in memory while it runs)
Postgres: this run inserted $inserted new rows; rappel_conso holds $day_rows rows published
          on $DAY and $all_rows in all (a day run again inserts 0: ON CONFLICT DO NOTHING)
EOF

say "Where to look"
cat <<EOF
Task logs:        ${run_dir:-$STATE/logs/rappel_conso/<run_id>}/<task>/<try>.log
                  e.g. cat ${run_dir:-...}/load/1.log
State (SQLite):   $STATE/dagd.db
Postgres:         $psql_line -c 'select reference_fiche, categorie_de_produit, motif_de_rappel from rappel_conso limit 5'
The sample API:   docker exec $API python3 -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:8000/api/explore/v2.1/catalog/datasets/rappelconso0/records?limit=2&where=date_de_publication%3Ddate%27$DAY%27").read().decode())'
Service logs:     docker logs $API; docker-compose -p $PROJECT -f compose/docker-compose.yml -f compose/docker-compose.offline.yml logs broker postgres
Another day:      make run DAY=2024-03-06     (the sample has 2024-03-04 to 2024-03-07)
Under the daemon: DAGD_CONN_WAREHOUSE=$DAGD_CONN_WAREHOUSE $DAGD serve --dags examples --state ./.dagd-state-rappel
                  then $DAGD backfill rappel_conso --from 2024-03-04 --to 2024-03-07 --conf '{"code_dir": "$CODE"}'
Stop and remove:  bash examples/run-rappel.sh --down
EOF
if [ "$rc" -ne 0 ]; then
    echo
    echo "run-rappel: dagd run exited with status $rc" >&2
fi
exit "$rc"
