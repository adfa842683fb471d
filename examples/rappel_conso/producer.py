"""Fetch one day of RappelConso recalls from the records API and publish them to Kafka.

Reads every page of
    $RAPPEL_API_URL/api/explore/v2.1/catalog/datasets/rappelconso0/records
        ?where=date_de_publication=date'<day>'&order_by=reference_fiche&limit=<page>&offset=<n>
(the public API or the sample server beside this file: same URL layout, same paging),
sends each record as one JSON message keyed by reference_fiche to $KAFKA_TOPIC on
$KAFKA_BOOTSTRAP_SERVERS, creating the topic (one partition) when it is missing, and prints
as its last line the offsets it wrote, for the loader:
    {"topic": "rappel_conso", "partition": 0, "start": S, "end": E, "published": N, "day": "..."}
The day is the run's logical date: the recalls published on that day.

Environment: RAPPEL_API_URL (base URL, e.g. https://data.economie.gouv.fr),
RAPPEL_DAY (YYYY-MM-DD), KAFKA_BOOTSTRAP_SERVERS (default broker:9092),
KAFKA_TOPIC (default rappel_conso), PAGE_SIZE (1..100, default 100).
"""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from kafka import KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

RECORDS = "/api/explore/v2.1/catalog/datasets/rappelconso0/records"


def env(name, default=None):
    v = os.environ.get(name, default)
    if v in (None, ""):
        sys.exit("producer: %s is not set" % name)
    return v


def get_json(url, tries=5):
    """GET url as JSON; transient failures (connection, 5xx, 429) are retried with backoff."""
    for attempt in range(1, tries + 1):
        try:
            with urllib.request.urlopen(url, timeout=30) as r:
                return json.load(r)
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")[:500]
            if e.code < 500 and e.code != 429:
                sys.exit("producer: %s answered %d: %s" % (url, e.code, body))
            err = "%d %s" % (e.code, body)
        except (urllib.error.URLError, OSError, ValueError) as e:
            err = str(e)
        if attempt == tries:
            sys.exit("producer: %s failed %d times, last: %s" % (url, tries, err))
        print("producer: %s (try %d), retrying" % (err, attempt), file=sys.stderr, flush=True)
        time.sleep(min(2 ** attempt, 30))


def fetch_day(base, day, page):
    """Every record published on `day`, page by page as the API hands them out."""
    out, offset, total = [], 0, None
    while total is None or offset < total:
        q = urllib.parse.urlencode({
            "where": "date_de_publication = date'%s'" % day,
            "order_by": "reference_fiche",
            "limit": page,
            "offset": offset,
        })
        body = get_json("%s%s?%s" % (base.rstrip("/"), RECORDS, q))
        total = body["total_count"]
        results = body["results"]
        print("producer: offset %d: %d of %d records" % (offset, len(results), total), flush=True)
        if not results:
            break  # the set shrank while we paged: what we have is what there is
        out.extend(results)
        offset += len(results)
    return out


def ensure_topic(servers, topic):
    admin = KafkaAdminClient(bootstrap_servers=servers, client_id="rappel-producer-admin")
    try:
        if topic not in admin.list_topics():
            try:
                admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
                print("producer: created topic %s" % topic, flush=True)
            except TopicAlreadyExistsError:
                pass
    finally:
        admin.close()


def main():
    base = env("RAPPEL_API_URL")
    day = env("RAPPEL_DAY")
    servers = env("KAFKA_BOOTSTRAP_SERVERS", "broker:9092").split(",")
    topic = env("KAFKA_TOPIC", "rappel_conso")
    page = int(env("PAGE_SIZE", "100"))

    records = fetch_day(base, day, page)
    ensure_topic(servers, topic)
    producer = KafkaProducer(bootstrap_servers=servers, acks="all", retries=5)
    sent = [producer.send(topic, key=r["reference_fiche"].encode(), partition=0,
                          value=json.dumps(r, ensure_ascii=False).encode()) for r in records]
    producer.flush(timeout=60)
    offsets = [f.get(timeout=60).offset for f in sent]
    producer.close()
    if offsets:
        start, end = min(offsets), max(offsets) + 1
    else:  # nothing published that day: an empty range at the topic's end
        from kafka import KafkaConsumer
        c = KafkaConsumer(bootstrap_servers=servers)
        tp = TopicPartition(topic, 0)
        start = end = c.end_offsets([tp])[tp]
        c.close()
    print("producer: published %d records for %s to %s [%d, %d)" % (len(records), day, topic, start, end),
          flush=True)
    print(json.dumps({"topic": topic, "partition": 0, "start": start, "end": end,
                      "published": len(records), "day": day}))


if __name__ == "__main__":
    main()
