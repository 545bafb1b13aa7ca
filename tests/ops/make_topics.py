#!/usr/bin/env python3
"""Creates the engine's eight topics as the admin on the secured test broker.

`auterity topics apply` takes no security settings yet, so the ops tests create the topics
themselves: make_topics.py BOOTSTRAP CA_PEM PREFIX PARTITIONS.
"""
import sys

from confluent_kafka.admin import AdminClient, NewTopic

STREAMS = ["ingress", "executions", "commands.step", "commands.ai", "commands.notify", "acks",
           "definitions", "deadletter"]


def main():
    bootstrap, ca, prefix, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    admin = AdminClient({"bootstrap.servers": bootstrap, "security.protocol": "SASL_SSL",
                         "sasl.mechanism": "PLAIN", "sasl.username": "admin",
                         "sasl.password": "admin-secret", "ssl.ca.location": ca})
    futures = admin.create_topics(
        [NewTopic(prefix + s, num_partitions=partitions, replication_factor=1) for s in STREAMS],
        request_timeout=30)
    for name, f in futures.items():
        f.result(timeout=60)
        print(f"created {name}")


if __name__ == "__main__":
    main()
