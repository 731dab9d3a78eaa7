"""Benchmark: the upload endpoint before (http.server, checked out of git) and after (aiohttp), in one run.

Scenarios, each against a fresh server process (its peak RSS is its VmHWM at the end):
  one 1 GiB upload;  50 parallel 20 MB uploads.
The client is the same for both: http.client in a separate process, streaming the file in 1 MiB sends with
visDQMUpload's body (fields size, checksum, file); a connection reset is retried after 0.2 s (at most
20 times), as a harvesting job would. Throughput = bytes saved / (all clients start -> last answer read);
server CPU = user + system seconds of the server process per GB saved.
Rounds alternate before/after; the table shows medians.

    .venv/bin/python bench/bench_upload.py [--before b248399] [--also REV] [--rounds 3] [--big-mb 1024] [--n 50]
        [--small-mb 20]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = Path("/tmp/t0dqm-bench-upload-src")
NAME = "DQM_V0001_R000357902__ZeroBias__Run2023D-PromptReco-v2__DQMIO.root"
RETRIES = 20

SERVER = """
import sys
sys.path.insert(0, {path!r})
import {module} as us
assert us.__file__.startswith({path!r}), us.__file__
srv = us.make_server("127.0.0.1", 0, {box!r}, max_size=2 << 30{extra})
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def make_source(mb: int) -> tuple[Path, str]:
    """A file of ``mb`` MiB starting with the ROOT magic (made once, reused) and its md5."""
    path = SRC / f"{mb}" / NAME
    md5_file = path.with_suffix(".md5")
    if path.is_file() and md5_file.is_file():
        return path, md5_file.read_text()
    path.parent.mkdir(parents=True, exist_ok=True)
    block = os.urandom(1 << 20)
    md5 = hashlib.md5()
    with open(path, "wb") as out:
        for i in range(mb):
            chunk = (b"root\0" + block[5:]) if i == 0 else block
            md5.update(chunk)
            out.write(chunk)
    md5_file.write_text(md5.hexdigest())
    return path, md5.hexdigest()


def upload(port: int, path: Path, md5: str) -> tuple[int, float]:
    """One upload with the body visDQMUpload sends (its encode(): the fields, the file part with its own
    Content-Length, the closing delimiter and an empty line), streamed; (HTTP status, seconds)."""
    size = path.stat().st_size
    boundary = uuid.uuid4().hex
    pre = b""
    for key, value in (("size", str(size)), ("checksum", f"md5:{md5}")):
        pre += f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
    pre += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{path.name}"\r\n'
        f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    post = f"\r\n--{boundary}--\r\n\r\n".encode()  # visDQMUpload ends with an empty line
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.putrequest("POST", "/dqm/dev/data/put")
    conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
    conn.putheader("Content-Length", str(len(pre) + size + len(post)))
    conn.endheaders()
    conn.send(pre)
    with open(path, "rb") as fh:
        while data := fh.read(1 << 20):
            conn.send(data)
    conn.send(post)
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status, time.perf_counter() - start


def client_main(port: int, path: str, md5: str, n: int) -> None:
    """Run ``n`` uploads at once (threads); print JSON {statuses, seconds}."""
    results: list[tuple[int, float]] = []
    retries: list[int] = []
    lock = threading.Lock()
    go = threading.Barrier(n)

    def one() -> None:
        go.wait()
        out = (-1, 0.0)
        for attempt in range(RETRIES):  # as a harvesting job would: the old server's listen backlog is 5,
            try:  # a burst of connections gets some of them reset
                out = upload(port, Path(path), md5)
                break
            except OSError as exc:
                print(f"upload attempt {attempt + 1} failed: {exc!r}", file=sys.stderr)
                with lock:
                    retries.append(1)
                time.sleep(0.2)
        with lock:
            results.append(out)

    start = time.perf_counter()
    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(
        json.dumps(
            {
                "statuses": [s for s, _ in results],
                "seconds": time.perf_counter() - start,
                "retries": len(retries),
            }
        )
    )


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def cpu_seconds(pid: int) -> float:
    """user + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def run_once(impl: str, tree: Path, work: Path, source: tuple[Path, str], n: int) -> dict[str, float]:
    """One scenario against the server of ``tree``: the http.server one for "before", else aiohttp's."""
    box = work / f"box-{impl}"
    shutil.rmtree(box, ignore_errors=True)
    if impl == "before":
        code = SERVER.format(path=str(tree), module="t0dqm.upload_server", box=str(box), extra="")
    else:
        code = SERVER.format(
            path=str(tree), module="t0dqm.servers.upload", box=str(box), extra=f", max_uploads={max(64, n)}"
        )
    server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=str(work))
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        idle, cpu0 = rss_mb(server.pid), cpu_seconds(server.pid)
        out = subprocess.run(
            [sys.executable, __file__, "--client", str(port), str(source[0]), source[1], str(n)],
            capture_output=True,
            text=True,
            timeout=1800,
            check=True,
        )
        result = json.loads(out.stdout)
        peak, cpu = peak_rss_mb(server.pid), cpu_seconds(server.pid) - cpu0
    finally:
        server.terminate()
        server.wait(30)
    ok = result["statuses"].count(200)
    assert set(result["statuses"]) <= {200, -1}, result
    stored = list(box.glob("[0-9]*/" + NAME))
    assert len(stored) == ok and all(p.stat().st_size == source[0].stat().st_size for p in stored)
    shutil.rmtree(box, ignore_errors=True)
    total = ok * source[0].stat().st_size
    return {
        "mb_s": total / result["seconds"] / 1e6,
        "seconds": result["seconds"],
        "peak_rss_mb": peak,
        "idle_rss_mb": idle,
        "cpu_s_per_gb": cpu / (total / 1e9),
        "failed": n - ok,
        "retries": result["retries"],
    }


def checkout(rev: str, into: Path) -> Path:
    """The whole ``t0dqm`` package of git revision ``rev``, extracted into ``into``."""
    into.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "t0dqm"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", default="b248399", help="git revision of the http.server implementation")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--big-mb", type=int, default=1024)
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--small-mb", type=int, default=20)
    parser.add_argument(
        "--also", metavar="REV", help="also measure the aiohttp server of this git revision (as 'REV')"
    )
    parser.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        port, path, md5, n = args.client
        client_main(int(port), path, md5, int(n))
        return
    with tempfile.TemporaryDirectory(prefix="t0dqm-bench-upload-") as tmp:
        work = Path(tmp)
        trees = {"before": checkout(args.before, work / "before"), "after": ROOT}
        if args.also:
            trees[args.also] = checkout(args.also, work / "also")
        scenarios = [
            (f"1 x {args.big_mb} MiB", make_source(args.big_mb), 1),
            (f"{args.n} x {args.small_mb} MiB parallel", make_source(args.small_mb), args.n),
        ]
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for label, source, n in scenarios:
                for impl, tree in trees.items():
                    results.setdefault((label, impl), []).append(run_once(impl, tree, work, source, n))
        print(
            f"| scenario | server | MB/s (median of {args.rounds}) | server CPU s/GB | peak RSS MB (median, max) "
            "| idle RSS MB | connections reset, retried | failed uploads |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for (label, impl), runs in results.items():
            speed = statistics.median(r["mb_s"] for r in runs)
            peaks = [r["peak_rss_mb"] for r in runs]
            idle = statistics.median(r["idle_rss_mb"] for r in runs)
            cpu = statistics.median(r["cpu_s_per_gb"] for r in runs)
            failed, retried = sum(r["failed"] for r in runs), sum(r["retries"] for r in runs)
            print(
                f"| {label} | {impl} | {speed:.0f} | {cpu:.2f} | {statistics.median(peaks):.0f}, {max(peaks):.0f} "
                f"| {idle:.0f} | {retried} | {failed} of {len(runs) * (args.n if 'parallel' in label else 1)} |"
            )
        for label, _source, _n in scenarios:
            b = statistics.median(r["mb_s"] for r in results[(label, "before")])
            a = statistics.median(r["mb_s"] for r in results[(label, "after")])
            print(f"{label}: after/before throughput ratio {a / b:.2f}")
            if args.also:
                c = statistics.median(r["mb_s"] for r in results[(label, args.also)])
                print(f"{label}: after/{args.also} throughput ratio {a / c:.2f}")


if __name__ == "__main__":
    main()
