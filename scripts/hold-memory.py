#!/usr/bin/env python3
"""What holding connections costs the gateway in memory: N TLS connections with the partner's
certificate each send an unfinished request header of SIZE bytes and hold it; the gateway's RSS
is read from /proc before and while they hold, and again once its watchdog has cut them.

    scripts/hold-memory.py PID PORT [N] [SIZE]      (run against a gateway started by you)

Loopback only; the connections end by themselves when the script exits (bounded: 60 s)."""
import os
import socket
import ssl
import sys
import time

here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
certs = os.environ.get("CERTS_DIR", os.path.join(here, "certs"))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main():
    pid, port = int(sys.argv[1]), int(sys.argv[2])
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 1_000_000
    ctx = ssl.create_default_context(cafile=os.path.join(certs, "root.pem"))
    ctx.load_cert_chain(os.path.join(certs, "example.client.pem"), os.path.join(certs, "example.client.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    before = rss_kib(pid)
    held, cut_early = [], 0
    # One header whose value never ends: header-count limits do not apply to it.
    chunk = b"b" * 1000
    for _ in range(n):
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="api.example.com")
        s.settimeout(5)
        try:
            s.sendall(b"GET /api/echo HTTP/1.1\r\nHost: api.example.com\r\nX-Big: ")
            sent = 0
            while sent < size:
                s.sendall(chunk)
                sent += len(chunk)
            held.append(s)
        except OSError:
            cut_early += 1
    time.sleep(0.5)
    holding = rss_kib(pid)
    deadline = time.time() + 60
    while time.time() < deadline:
        still = 0
        for s in held:
            try:
                s.settimeout(0.01)
                if s.recv(1) == b"":
                    continue
                still += 1
            except (socket.timeout, ssl.SSLWantReadError):
                still += 1
            except OSError:
                pass
        if still == 0:
            break
        time.sleep(1)
    after = rss_kib(pid)
    print("| connections | header bytes each | cut while sending | RSS before (MiB) | RSS holding (MiB) | RSS after the cuts (MiB) |")
    print("|---|---|---|---|---|---|")
    print(f"| {n} | {size} | {cut_early} | {before / 1024:.1f} | {holding / 1024:.1f} | {after / 1024:.1f} |")


if __name__ == "__main__":
    main()
