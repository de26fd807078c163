#!/usr/bin/env python3
"""JetStream publish throughput under `sync_interval: always`: single publishes with N acks in
flight against atomic batches (ADR-50), on the nats-server given by PORT. Used for
docs/BENCHMARKS.md ("Report -> units assigned (T2), third session").

    python3 -m venv /tmp/npy && /tmp/npy/bin/pip install nats-py
    printf 'listen: 127.0.0.1:14222\njetstream { store_dir: /tmp/jsb\n sync_interval: always }\n' > /tmp/jsb.conf
    nats-server -c /tmp/jsb.conf &
    /tmp/npy/bin/python docs/bench/jetstream_sync.py 14222
"""
import asyncio, json, sys, time, uuid

import nats

PAYLOAD = b"x" * 800


async def fresh_stream(nc):
    try:
        await nc.request("$JS.API.STREAM.DELETE.B", b"", timeout=5)
    except Exception:
        pass
    cfg = {"name": "B", "subjects": ["b.>"], "storage": "file", "allow_atomic": True,
           "num_replicas": 1, "duplicate_window": 120_000_000_000}
    await nc.request("$JS.API.STREAM.CREATE.B", json.dumps(cfg).encode(), timeout=5)


async def singles(nc, n, inflight):
    js = nc.jetstream()
    await fresh_stream(nc)
    sem = asyncio.Semaphore(inflight)

    async def one(i):
        async with sem:
            await js.publish(f"b.{i % 100}", PAYLOAD, headers={"Nats-Msg-Id": f"m{i}"})

    start = time.time()
    await asyncio.gather(*[one(i) for i in range(n)])
    print(f"single publishes, {inflight:4d} in flight: {n / (time.time() - start):8.0f} msg/s")


async def batches(nc, n, size, concurrency):
    await fresh_stream(nc)
    sem = asyncio.Semaphore(concurrency)

    async def batch(first):
        async with sem:
            batch_id = uuid.uuid4().hex
            for k in range(size):
                headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(k + 1),
                           "Nats-Msg-Id": f"m{first + k}"}
                if k == size - 1:
                    headers["Nats-Batch-Commit"] = "1"
                    answer = json.loads((await nc.request("b.1", PAYLOAD, headers=headers, timeout=10)).data)
                    assert "error" not in answer, answer
                else:
                    await nc.publish("b.1", PAYLOAD, headers=headers)

    start = time.time()
    await asyncio.gather(*[batch(i) for i in range(0, n, size)])
    print(f"atomic batches of {size:4d}, {concurrency} at a time: {n / (time.time() - start):8.0f} msg/s")


async def main(port):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    await singles(nc, 5000, 1)
    await singles(nc, 5000, 256)
    await batches(nc, 20000, 100, 4)
    await batches(nc, 20000, 500, 2)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
