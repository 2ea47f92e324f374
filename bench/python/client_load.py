"""Closed-loop load of the Python client (switchyard_fleet) against a
gateway, for `make bench`'s `python` section.

N callers (threads sharing one blocking Client, or asyncio tasks sharing
one AsyncClient) each send their next call when the last ended: a warm-up
that is not recorded, then a measured window. Prints one JSON object:
calls, seconds, calls_per_s, p50_us, p99_us, errors.
"""

import argparse
import asyncio
import json
import threading
import time

import switchyard_fleet as sf


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_threads(client, args, payload):
    latencies = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter()
    window_start = start + args.warm_up
    end = window_start + args.seconds

    def caller():
        mine = []
        failed = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= end:
                break
            try:
                client.call(args.service, payload)
            except sf.SwitchyardError:
                failed += 1
                continue
            t1 = time.perf_counter()
            if t0 >= window_start and t1 <= end:
                mine.append((t1 - t0) * 1e6)
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=caller) for _ in range(args.in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0]


async def run_tasks(args, payload):
    client = await sf.AsyncClient.connect(args.gateway, args.ca)
    latencies = []
    errors = 0
    loop = asyncio.get_running_loop()
    window_start = loop.time() + args.warm_up
    end = window_start + args.seconds

    async def caller():
        nonlocal errors
        while True:
            t0 = loop.time()
            if t0 >= end:
                return
            try:
                await client.call(args.service, payload)
            except sf.SwitchyardError:
                errors += 1
                continue
            t1 = loop.time()
            if t0 >= window_start and t1 <= end:
                latencies.append((t1 - t0) * 1e6)

    await asyncio.gather(*(caller() for _ in range(args.in_flight)))
    await client.close()
    return latencies, errors


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--gateway", required=True)
    p.add_argument("--ca", required=True)
    p.add_argument("--service", default="echo")
    p.add_argument("--payload-bytes", type=int, default=64)
    p.add_argument("--in-flight", type=int, default=1)
    p.add_argument("--seconds", type=float, default=2.5)
    p.add_argument("--warm-up", type=float, default=0.5)
    p.add_argument("--mode", choices=["threads", "asyncio"], default="threads")
    args = p.parse_args()
    payload = b"x" * args.payload_bytes
    if args.mode == "threads":
        with sf.Client(args.gateway, args.ca) as client:
            latencies, errors = run_threads(client, args, payload)
    else:
        latencies, errors = asyncio.run(run_tasks(args, payload))
    latencies.sort()
    print(
        json.dumps(
            {
                "calls": len(latencies),
                "seconds": args.seconds,
                "calls_per_s": len(latencies) / args.seconds,
                "p50_us": percentile(latencies, 0.5),
                "p99_us": percentile(latencies, 0.99),
                "errors": errors,
            }
        )
    )


if __name__ == "__main__":
    main()
