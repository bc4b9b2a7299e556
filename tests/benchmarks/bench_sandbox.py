"""How long the sandbox takes to accept one full-size bulk call, beside a bare aiohttp floor.

The sandbox must never be the bottleneck of an engine benchmark. The baseline
is the least any aiohttp server can do with the same request: read the body,
parse it with orjson and answer a count, in its own process like the sandbox.

    python -m tests.benchmarks.bench_sandbox [--contacts 50000] [--calls 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import aiohttp
import orjson

from tests.fixtures.sandbox import read_banner

FLOOR_SERVER = """
import orjson, sys
from aiohttp import web
async def handle(request):
    body = orjson.loads(await request.read())
    items = body.get("messages") or body.get("contacts")
    return web.Response(body=orjson.dumps({"total": len(items)}), content_type="application/json")
app = web.Application(client_max_size=1 << 28)
app.router.add_post("/{tail:.*}", handle)
async def main():
    runner = web.AppRunner(app, access_log=None); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print("listening on http://127.0.0.1:%d" % site._server.sockets[0].getsockname()[1], flush=True)
    import asyncio; await asyncio.Event().wait()
import asyncio; asyncio.run(main())
"""


def pixabits_body(contacts: int, start: int) -> bytes:
    return orjson.dumps(
        {
            "sender": "ACMEIN",
            "messages": [
                {"to": f"+91{9_000_000_000 + start + i}", "body": f"Hi customer {i}, our sale ends tonight"}
                for i in range(contacts)
            ],
        }
    )


def noxitel_body(contacts: int, start: int) -> bytes:
    return orjson.dumps(
        {
            "sender": "ACMEIN",
            "message": "Hi #name#, our sale ends tonight",
            "dlt_entity_id": "1101234567890",
            "dlt_template_id": "1107161234567890123",
            "contacts": [
                {"mobile": f"91{9_000_000_000 + start + i}", "parameters": {"name": f"C{i}"}} for i in range(contacts)
            ],
        }
    )


async def time_calls(url: str, make_body: Callable[[int, int], bytes], contacts: int, calls: int) -> list[float]:
    headers = {"Authorization": "Bearer sandbox", "Content-Type": "application/json"}
    bodies = [make_body(contacts, n * contacts) for n in range(calls)]
    seconds = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        for body in bodies:
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            seconds.append(time.perf_counter() - started)
    return seconds


def start(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    return process, read_banner(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--calls", type=int, default=10)
    args = parser.parse_args()
    sandbox, sandbox_url = start([sys.executable, "-m", "engine", "sandbox", "--port", "0", "--plan", "premium"])
    floor, floor_url = start([sys.executable, "-c", FLOOR_SERVER])
    try:
        rows = []
        for name, path, make in (
            ("Pixabits /v2/sms/bulk", "/v2/sms/bulk", pixabits_body),
            ("Noxitel /sms (#var# contacts)", "/api/v2/sms", noxitel_body),
        ):
            engine = asyncio.run(time_calls(sandbox_url + path, make, args.contacts, args.calls))
            base = asyncio.run(time_calls(floor_url + path, make, args.contacts, args.calls))
            rows.append((name, statistics.median(engine), statistics.median(base)))
    finally:
        for process in (sandbox, floor):
            process.terminate()
            process.wait()
    print(f"{args.contacts:,} contacts per call, median of {args.calls} calls, client and server on loopback")
    print(f"{'endpoint':34} {'sandbox ms':>11} {'floor ms':>9} {'ratio':>6} {'sandbox msg/s':>14}")
    for name, engine_s, base_s in rows:
        print(
            f"{name:34} {engine_s * 1000:11.0f} {base_s * 1000:9.0f} {engine_s / base_s:6.2f} "
            f"{args.contacts / engine_s:14,.0f}"
        )


if __name__ == "__main__":
    main()
