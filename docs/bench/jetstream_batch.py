#!/usr/bin/env python3
"""Time to publish N events to JetStream under `sync_interval: always`: one atomic batch (ADR-50)
against N single publishes with every ack in flight, on the nats-server given by PORT. It sets
the outbox relay's ATOMIC_BATCH_MIN (crates/bus/src/relay.rs; docs/BENCHMARKS.md, eighth
session): a batch's commit is answered after a fixed few milliseconds whatever its size.

    python3 -m venv /tmp/npy && /tmp/npy/bin/pip install nats-py
    printf 'listen: 127.0.0.1:14222\njetstream { store_dir: /tmp/jsb\n sync_interval: always }\n' > /tmp/jsb.conf
    nats-server -c /tmp/jsb.conf &
    /tmp/npy/bin/python docs/bench/jetstream_batch.py 14222
"""
import asyncio, json, sys, time, uuid

import nats

# The stream and the message size of jetstream_sync.py (its directory is on the import path).
from jetstream_sync import PAYLOAD, fresh_stream

ROUNDS = 25


async def main(port):
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    await fresh_stream(nc)
    js = nc.jetstream()
    n = 0
    print("events  singles, acks in flight (p50 / p90 ms)  one atomic batch (p50 / p90 ms)")
    for size in (1, 2, 4, 8, 14, 32, 64, 128):
        cells = []
        for mode in ("singles", "batch"):
            times = []
            for _ in range(ROUNDS):
                start = time.perf_counter()
                if mode == "singles":
                    acks = []
                    for _ in range(size):
                        acks.append(js.publish("b.1", PAYLOAD, headers={"Nats-Msg-Id": f"m{n}"}))
                        n += 1
                    await asyncio.gather(*acks)
                else:
                    batch_id = uuid.uuid4().hex
                    for k in range(size):
                        headers = {"Nats-Batch-Id": batch_id, "Nats-Batch-Sequence": str(k + 1),
                                   "Nats-Msg-Id": f"m{n}"}
                        n += 1
                        if k == size - 1:
                            headers["Nats-Batch-Commit"] = "1"
                            reply = await nc.request("b.1", PAYLOAD, headers=headers, timeout=10)
                            answer = json.loads(reply.data)
                            assert "error" not in answer, answer
                        else:
                            await nc.publish("b.1", PAYLOAD, headers=headers)
                times.append((time.perf_counter() - start) * 1000)
                await asyncio.sleep(0.01)
            times.sort()
            cells.append(f"{times[ROUNDS // 2]:6.2f} / {times[ROUNDS * 9 // 10]:6.2f}")
        print(f"{size:6d}  {cells[0]:>38}  {cells[1]:>32}")
    await nc.close()


asyncio.run(main(sys.argv[1]))
