"""An outside Kafka client (the Python confluent-kafka wheel, its own librdkafka) for the
ingest tests: produces events the way a service written in another language would, and
reads what ShopLens published.

  produce BROKERS TOPIC_PREFIX FILE   FILE: JSON lines {"topic","key","payload"}; prints
                                      {"produced": n}
  consume BROKERS TOPIC N             reads N records from the start of TOPIC; prints
                                      {"count": n, "partitions": {key: partition}}
"""
import json
import sys
import uuid

from confluent_kafka import Consumer, Producer


def produce(brokers, prefix, path):
    producer = Producer({
        "bootstrap.servers": brokers,
        "enable.idempotence": True,
        "acks": "all",
        # The Java client's partitioner, as ShopLens's producer uses.
        "partitioner": "murmur2_random",
    })
    failures = []

    def report(err, _msg):
        if err is not None:
            failures.append(str(err))

    n = 0
    with open(path) as f:
        for line in f:
            rec = json.loads(line)
            producer.produce(prefix + rec["topic"], key=rec["key"].encode(),
                             value=rec["payload"].encode(), on_delivery=report)
            producer.poll(0)
            n += 1
    left = producer.flush(30)
    if failures or left:
        raise SystemExit(f"delivery failed: {failures[:3]} ({left} left)")
    print(json.dumps({"produced": n}))


def consume(brokers, topic, want):
    consumer = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "outside-" + uuid.uuid4().hex,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": 6000,
    })
    consumer.subscribe([topic])
    partitions = {}
    count = 0
    idle = 0
    while count < want and idle < 60:
        msg = consumer.poll(0.5)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            raise SystemExit(f"consume failed: {msg.error()}")
        idle = 0
        count += 1
        partitions[msg.key().decode()] = msg.partition()
    consumer.close()
    print(json.dumps({"count": count, "partitions": partitions}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "produce":
        produce(args[0], args[1], args[2])
    elif command == "consume":
        consume(args[0], args[1], int(args[2]))
    else:
        raise SystemExit(f"unknown command {command}")
