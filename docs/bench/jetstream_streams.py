#!/usr/bin/env python3
"""Single publishes under `sync_interval: always` spread over 1, 2 or 4 streams, 256 acks in
flight in all, on the nats-server given by PORT: whether nats-server syncs different streams'
messages in parallel (it syncs one stream's one after another). Used for docs/BENCHMARKS.md
("What limits the figures", tenth session).

    python3 -m venv /tmp/npy && /tmp/npy/bin/pip install nats-py
    printf 'listen: 127.0.0.1:14222\njetstream { store_dir: /tmp/jsb\n sync_interval: always }\n' > /tmp/jsb.conf
    nats-server -c /tmp/jsb.conf &
    /tmp/npy/bin/python docs/bench/jetstream_streams.py 14222
"""
import asyncio, json, sys, time

import nats

# The message size of jetstream_sync.py (its directory is on the import path).
from jetstream_sync import PAYLOAD

MESSAGES = 4000
IN_FLIGHT = 256


async def fresh_stream(nc, name, subjects):
    try:
        await nc.request(f"$JS.API.STREAM.DELETE.{name}", b"", timeout=5)
    except Exception:
        pass
    cfg = {"name": name, "subjects": [subjects], "storage": "file", "num_replicas": 1,
           "duplicate_window": 120_000_000_000}
    await nc.request(f"$JS.API.STREAM.CREATE.{name}", json.dumps(cfg).encode(), timeout=5)


async def pump(js, prefix, n, inflight, tag):
    sem = asyncio.Semaphore(inflight)

    async def one(i):
        async with sem:
            await js.publish(f"{prefix}.{i % 100}", PAYLOAD, headers={"Nats-Msg-Id": f"{tag}{i}"})

    await asyncio.gather(*[one(i) for i in range(n)])


async def run(port, streams):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    for k in range(4):
        await fresh_stream(nc, f"S{k}", f"s{k}.>")
    js = nc.jetstream()
    start = time.time()
    await asyncio.gather(*[
        pump(js, f"s{k}", MESSAGES // streams, IN_FLIGHT // streams, f"r{streams}-{k}-")
        for k in range(streams)
    ])
    print(f"{streams} stream(s): {MESSAGES / (time.time() - start):8.0f} msg/s")
    await nc.close()


if __name__ == "__main__":
    for streams in (1, 2, 4, 1, 2, 4):
        asyncio.run(run(int(sys.argv[1]), streams))
