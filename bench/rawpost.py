"""A client that costs next to nothing per request, to measure what the simulator itself can serve.

A requests loop spends ~0.5 ms of its own CPU on each POST, so timing one measures the client as
much as the server. This one sends prebuilt bytes on a keep-alive socket and reads just enough of
each answer to find its end. Usage (it waits for the wall clock to reach START, so that several
clients begin together, then prints when it finished):
    python -m bench.rawpost URL USER TOKEN COUNT TAG START
"""

from __future__ import annotations

import base64
import socket
import sys
import time
from urllib.parse import urlsplit


def post_loop(url: str, user: str, token: str, count: int, tag: str) -> float:
    """POST `count` builds of bench-p one after another; returns when it finished (time.time())."""
    parts = urlsplit(url)
    auth = base64.b64encode(f"{user}:{token}".encode()).decode()
    sock = socket.create_connection((parts.hostname, parts.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    reader = sock.makefile("rb")
    for i in range(count):
        body = f"N={tag}{i}".encode()
        sock.sendall(f"POST {parts.path}job/bench-p/buildWithParameters HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Authorization: Basic {auth}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        status = reader.readline()
        if b" 201 " not in status:
            raise RuntimeError(f"the simulator answered {status!r}")
        length = 0
        while (line := reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        reader.read(length)
    sock.close()
    return time.time()


if __name__ == "__main__":
    url, user, token, count, tag, start = sys.argv[1:7]
    time.sleep(max(0.0, float(start) - time.time()))
    print(post_loop(url, user, token, int(count), tag))
