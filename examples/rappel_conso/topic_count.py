"""Count the messages a Kafka topic partition holds by reading it from its first offset
to the end (until the broker has had nothing more for a while), and print
    {"topic": ..., "partition": ..., "messages": N, "first": F, "last": L}
Reading is the count that does not depend on the broker's answer to ListOffsets (the
"latest" offset), which the in-memory broker of the offline stack reports too low.

Usage: python3 topic_count.py [--bootstrap broker:9092] [--topic rappel_conso] [--partition 0]
"""
import argparse
import json

from kafka import KafkaConsumer, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", default="broker:9092")
    ap.add_argument("--topic", default="rappel_conso")
    ap.add_argument("--partition", type=int, default=0)
    ap.add_argument("--idle-ms", type=int, default=3000)
    a = ap.parse_args()
    c = KafkaConsumer(bootstrap_servers=a.bootstrap.split(","), enable_auto_commit=False,
                      consumer_timeout_ms=a.idle_ms, client_id="rappel-topic-count")
    n, first, last = 0, None, None
    if a.topic in c.topics():
        tp = TopicPartition(a.topic, a.partition)
        c.assign([tp])
        c.seek_to_beginning(tp)
        for msg in c:
            n += 1
            first = msg.offset if first is None else first
            last = msg.offset
    c.close()
    print(json.dumps({"topic": a.topic, "partition": a.partition, "messages": n, "first": first, "last": last}))


if __name__ == "__main__":
    main()
