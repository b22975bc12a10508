"""Camera fleets: frames from Redis Streams through a tier to detection events on Kafka, nothing lost.

`python -m tools.bridge` is a client of the server like the others: it reads JPEG entries in a
consumer group, sends their bytes with `PeopleClient` (all logic stays in Triton) and produces one
JSON event per entry. An entry is acknowledged only after Kafka confirmed its event, so a crash or an
outage leaves it pending for a peer or a restart. One concern per module:

- `options.py`: every option, its default and why; `entry.py`: an entry's fields and the bridge's own checks;
- `event.py`: the event as it goes on Kafka; `redis_in.py`: the consumer group (read, claim, ack, dead letters);
- `inference.py`: requests to the tier and what a failure means; `kafka_out.py`: the idempotent producer;
- `pipeline.py`: slots, order per camera, retries and the clean stop; `metrics.py`: Prometheus;
- `publish.py`: a small publisher; `local.py`: Redis and a Tansu broker for tests and `demo.py`.

Nothing outside its tests imports this package (tests/unit/test_layout.py).
"""
