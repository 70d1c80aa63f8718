#!/usr/bin/env python3
"""A scripted DNS server (UDP and TCP on one loopback port) that gives the
answers a real server never gives, for the resolver's failure paths.
Stdlib only. Prints "ready" on stderr once listening.

  dns_responder.py --port PORT --mode MODE

Modes (every answer echoes the query's ID and question):
  servfail   RCODE 2
  refused    RCODE 5
  silent     never answers (the client times out)
  loop       one answer whose owner name is a compression pointer to itself
  forward    one answer whose owner name points forward, past itself
  lying      ANCOUNT 3, one record present
  longlabel  an MX whose exchange has a label of 64 bytes
  tc         over UDP: TC=1 and no records; over TCP: MX 10 mx.tc.test (AD=1)
  mx         MX 20 b.example / 10 a.example / 10 c.example, AD=1
  longcname  a CNAME (AD=1) to a name of 198 bytes whose labels are bytes 0x01,
             763 characters in presentation form (\001 escapes); nothing else
  cname-servfail, cname-gone
             a domain whose MX (AD=1) is mx.part.test, a CNAME to
             mx.unsigned.test, A 127.0.0.35: the address answers carry the
             chain with AD=0 (its end is insecure), TXT and TLSA are
             NXDOMAIN (AD=1); the CNAME question itself is SERVFAIL, or
             (cname-gone) a validated NODATA: DNS that changed between the
             two questions
"""
import argparse
import socket
import struct
import sys
import threading


def question_end(q):
    """Offset just past the question of query q (uncompressed name)."""
    i = 12
    while q[i] != 0:
        i += 1 + q[i]
    return i + 1 + 4


def header(q, flags, an, ns=0, ar=0):
    return q[:2] + struct.pack(">HHHHH", flags, 1, an, ns, ar)


def rr(owner, rtype, rdata, ttl=60):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


QNAME = struct.pack(">H", 0xC00C)  # pointer to the question name


def mx(pref, name):
    return struct.pack(">H", pref) + b"".join(
        bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"


def wire(name):
    return b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"


def qtype(q):
    return struct.unpack(">H", q[question_end(q) - 4:question_end(q) - 2])[0]


def part_cname(q, mode, qs, base):
    """The cname-* modes: see the module comment."""
    t = qtype(q)
    if t == 15:
        return header(q, base | 0x20, 1) + qs + rr(QNAME, 15, mx(10, "mx.part.test"))
    if t in (1, 28):
        target = wire("mx.unsigned.test")
        out = rr(QNAME, 5, target)
        n = 1
        if t == 1:
            out += rr(target, 1, bytes([127, 0, 0, 35]))
            n = 2
        return header(q, base, n) + qs + out
    if t == 5:
        if mode == "cname-servfail":
            return header(q, base | 2, 0) + qs
        return header(q, base | 0x20, 0) + qs
    return header(q, base | 0x20 | 3, 0) + qs  # TXT, TLSA, DNSKEY...: NXDOMAIN


def answer(q, mode, tcp):
    qs = q[12:question_end(q)]
    rd = q[2] & 1
    base = 0x8080 | (rd << 8)  # QR, RA, RD copied
    if mode == "servfail":
        return header(q, base | 2, 0) + qs
    if mode == "refused":
        return header(q, base | 5, 0) + qs
    if mode == "silent":
        return None
    if mode == "loop":
        at = 12 + len(qs)
        return header(q, base, 1) + qs + struct.pack(">H", 0xC000 | at) + struct.pack(
            ">HHIH", 15, 1, 60, 3) + b"\0\1\0"
    if mode == "forward":
        at = 12 + len(qs)
        return header(q, base, 1) + qs + struct.pack(">H", 0xC000 | (at + 2)) + b"\0" + struct.pack(
            ">HHIH", 15, 1, 60, 3) + b"\0\1\0"
    if mode == "lying":
        return header(q, base, 3) + qs + rr(QNAME, 15, mx(10, "a.example"))
    if mode == "longlabel":
        return header(q, base, 1) + qs + rr(QNAME, 15, struct.pack(">H", 10) + b"\x40" + b"a" * 64 + b"\0")
    if mode == "tc":
        if not tcp:
            return header(q, base | 0x0200, 0) + qs
        return header(q, base | 0x20, 1) + qs + rr(QNAME, 15, mx(10, "mx.tc.test"))
    if mode == "mx":
        return header(q, base | 0x20, 3) + qs + rr(QNAME, 15, mx(20, "b.example")) + rr(
            QNAME, 15, mx(10, "a.example")) + rr(QNAME, 15, mx(10, "c.example"))
    if mode.startswith("cname-"):
        return part_cname(q, mode, qs, base)
    if mode == "longcname":
        target = b"".join(b"\x3f" + b"\x01" * 63 for _ in range(3)) + b"\x04test\x00"
        return header(q, base | 0x20, 1) + qs + rr(QNAME, 5, target)
    raise SystemExit("unknown mode " + mode)


def serve_tcp(sock, mode):
    while True:
        c, _ = sock.accept()
        try:
            c.settimeout(5)
            n = struct.unpack(">H", c.recv(2))[0]
            q = b""
            while len(q) < n:
                chunk = c.recv(n - len(q))
                if not chunk:
                    break
                q += chunk
            a = answer(q, mode, True)
            if a is not None:
                c.sendall(struct.pack(">H", len(a)) + a)
                c.recv(1)  # until the client closes
        except (OSError, struct.error, IndexError):
            pass
        finally:
            c.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--mode", required=True)
    args = ap.parse_args()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.1", args.port))
    t = socket.socket()
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("127.0.0.1", args.port))
    t.listen(8)
    threading.Thread(target=serve_tcp, args=(t, args.mode), daemon=True).start()
    print("ready", file=sys.stderr, flush=True)
    while True:
        q, peer = u.recvfrom(4096)
        try:
            a = answer(q, args.mode, False)
        except IndexError:
            continue
        if a is not None:
            u.sendto(a, peer)


if __name__ == "__main__":
    main()
