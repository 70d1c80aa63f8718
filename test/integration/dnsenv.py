"""Test DNS on loopback: an authoritative nsd serving test zones signed at
test time with ldns-signzone (keys made by ldns-keygen in a temporary
directory, never committed), an unbound validating them with the test trust
anchors, and the scripted responder (test/peers/dns_responder.py) for the
answers real servers never give.

    with DnsEnv(tmp, extra={"example.test": ["mx1 IN TLSA 3 1 1 ab..."]}) as dns:
        dns.resolver        # "127.0.0.1:PORT" of the validating unbound
        dns.nsd_port

Zones (each may get extra records through `extra`):
  example.test   signed: MX 10 mx1, MX 20 mx2; mx1/mx2 A and AAAA; TLSA on
                 _25._tcp.mx1; _mta-sts TXT; nullmx (MX 0 .); nomx (A only);
                 alias (CNAME to mx1), _25._tcp.alias CNAME to the mx1 TLSA
  insecure.test  unsigned (and domain-insecure in unbound): MX, A, TLSA
  bogus.test     signed, then an MX, an A and a TLSA record changed after
                 signing, so unbound answers SERVFAIL
`stubs` maps a name to "IP:PORT" of another server (e.g. a Responder) that
unbound asks for that name: a DNS outage for one name only.
`tamper` lists "OWNER TYPE" (e.g. "mxv.example.test AAAA", A or AAAA) whose
data is changed after signing in whatever signed zone holds it: that one
answer is bogus (SERVFAIL) while the rest of the zone validates.
Processes are children of the test, stopped by PID.
"""
import os
import subprocess
import time

import harness

ZONES = {
    "example.test": """
@        IN MX 10 mx1
@        IN MX 20 mx2
mx1      IN A 127.0.0.1
mx1      IN AAAA ::1
mx2      IN A 127.0.0.2
_25._tcp.mx1 IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
_25._tcp.mx2 IN TLSA 2 0 1 fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210
_mta-sts IN TXT "v=STS1; " "id=20240101"
nullmx   IN MX 0 .
nomx     IN A 127.0.0.3
alias    IN CNAME mx1
_25._tcp.alias IN CNAME _25._tcp.mx1
""",
    "insecure.test": """
@        IN MX 10 mx
mx       IN A 127.0.0.1
_25._tcp.mx IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
""",
    "bogus.test": """
@        IN MX 10 mx
mx       IN A 127.0.0.1
_25._tcp.mx IN TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
""",
}
SIGNED = ("example.test", "bogus.test")


def _soa(zone):
    return """$ORIGIN %s.
$TTL 300
@ IN SOA ns.%s. hostmaster.%s. 1 3600 600 86400 300
@ IN NS ns
ns IN A 127.0.0.1
""" % (zone, zone, zone)


def _run(argv, cwd):
    r = subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), r.stderr.decode(errors="replace")))
    return r.stdout.decode().strip()


def _tamper_records(path, which):
    """Changes the data of the A/AAAA records named in `which` ("OWNER TYPE")
    after signing: their RRSIGs no longer match."""
    want = {(o.rstrip(".").lower() + ".", t) for o, t in (w.split() for w in which)}
    bad = {"A": "127.0.0.66", "AAAA": "::66"}
    out = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) == 5 and (fields[0].lower(), fields[3]) in want:
                line = "\t".join(fields[:4] + [bad[fields[3]]]) + "\n"
            out.append(line)
    with open(path, "w") as f:
        f.writelines(out)


def _tamper(path):
    """Changes record data after signing (the RRSIGs stay as they were)."""
    out = []
    with open(path) as f:
        for line in f:
            fields = line.split()
            if len(fields) >= 5 and fields[3] == "MX" and fields[0].startswith("bogus.test"):
                line = line.replace("mx.bogus.test.", "evil.bogus.test.")
            elif len(fields) >= 5 and fields[3] == "A" and fields[0] == "mx.bogus.test.":
                line = line.replace("127.0.0.1", "127.0.0.66")
            elif len(fields) >= 5 and fields[3] == "TLSA":
                line = line.replace("0123456789abcdef", "ffffffffffffffff", 1)
            out.append(line)
    with open(path, "w") as f:
        f.writelines(out)


class DnsEnv:
    """nsd (authoritative, signed zones) + unbound (validating) on loopback."""

    def __init__(self, tmp, extra=None, stubs=None, tamper=()):
        self.dir = os.path.join(tmp, "dns")
        os.makedirs(self.dir, exist_ok=True)
        self.nsd_port = harness.free_port()
        self.unbound_port = harness.free_port()
        self.resolver = "127.0.0.1:%d" % self.unbound_port
        self.procs = []
        self.stubs = dict(stubs or {})  # name -> "IP:PORT" of a server unbound asks for it
        anchors = []
        try:
            for zone, body in ZONES.items():
                text = _soa(zone) + body + "\n".join((extra or {}).get(zone, [])) + "\n"
                path = os.path.join(self.dir, zone + ".zone")
                with open(path, "w") as f:
                    f.write(text)
                if zone in SIGNED:
                    ksk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", "-k", zone], self.dir)
                    zsk = _run(["ldns-keygen", "-a", "ECDSAP256SHA256", zone], self.dir)
                    _run(["ldns-signzone", "-o", zone, path, zsk, ksk], self.dir)
                    os.replace(path + ".signed", path)
                    if zone == "bogus.test":
                        _tamper(path)
                    _tamper_records(path, tamper)
                    anchors.append(os.path.join(self.dir, ksk + ".ds"))
            self._start_nsd()
            self._start_unbound(anchors)
        except Exception:
            self.stop()
            raise

    def _start_nsd(self):
        d = self.dir
        conf = os.path.join(d, "nsd.conf")
        with open(conf, "w") as f:
            f.write("""server:
  ip-address: 127.0.0.1@{port}
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  zonesdir: "{d}"
  database: ""
  pidfile: "{d}/nsd.pid"
  xfrdfile: "{d}/xfrd.state"
  xfrdir: "{d}"
  zonelistfile: "{d}/zone.list"
  logfile: "{d}/nsd.log"
  server-count: 1
  verbosity: 1
remote-control:
  control-enable: no
""".format(port=self.nsd_port, d=d))
            for zone in ZONES:
                f.write("zone:\n  name: %s\n  zonefile: %s.zone\n" % (zone, zone))
        p = harness.Process(["nsd", "-d", "-c", conf], os.path.join(d, "nsd.stderr"))
        self.procs.append(p)
        self._wait_answer(self.nsd_port, "example.test", p, "nsd")

    def _start_unbound(self, anchors):
        d = self.dir
        conf = os.path.join(d, "unbound.conf")
        with open(conf, "w") as f:
            f.write("""server:
  interface: 127.0.0.1
  port: {port}
  do-ip6: no
  username: ""
  chroot: ""
  directory: "{d}"
  pidfile: "{d}/unbound.pid"
  use-syslog: no
  logfile: ""
  verbosity: 1
  val-log-level: 2
  num-threads: 1
  do-not-query-localhost: no
  access-control: 127.0.0.0/8 allow
  module-config: "validator iterator"
  harden-dnssec-stripped: yes
  qname-minimisation: no
  domain-insecure: "insecure.test"
  # RFC 6761 names are answered NXDOMAIN by default (a static local zone)
  local-zone: "test." nodefault
  target-fetch-policy: "0 0 0 0 0"
  # A loaded machine (the ASan pass) can make nsd answer late: unbound then
  # must neither give up on it for a while nor remember a validation that
  # failed for it as bogus (60 s by default), which turned one slow answer
  # into a SERVFAIL for a later query of the test.
  infra-cache-min-rtt: 1000
  infra-keep-probing: yes
  val-bogus-ttl: 0
  trust-anchor-signaling: no
""".format(port=self.unbound_port, d=d))
            for a in anchors:
                f.write('  trust-anchor-file: "%s"\n' % a)
            f.write("remote-control:\n  control-enable: no\n")
            for zone in ZONES:
                f.write("stub-zone:\n  name: %s\n  stub-addr: 127.0.0.1@%d\n" % (zone, self.nsd_port))
            for name, addr in self.stubs.items():
                ip, port = addr.rsplit(":", 1)
                f.write("stub-zone:\n  name: %s\n  stub-addr: %s@%s\n" % (name, ip, port))
        p = harness.Process(["unbound", "-d", "-c", conf], os.path.join(d, "unbound.stderr"))
        self.procs.append(p)
        # Validated end to end (NOERROR), not merely answering, in every
        # signed zone: the first query under a trust anchor primes it (its
        # DNSKEY), and a priming that failed on a loaded machine would fail
        # the test's first lookup in that zone (SERVFAIL), seen in CI.
        for zone in SIGNED:
            self._wait_answer(self.unbound_port, zone, p, "unbound", rcode=0)

    def _wait_answer(self, port, name, proc, what, rcode=None):
        """Waits until the server answers a query over UDP (with `rcode`,
        when given)."""
        import socket
        import struct
        q = struct.pack(">HHHHHH", 7, 0x0100, 1, 0, 0, 0)
        q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
        q += struct.pack(">HH", 6, 1)
        deadline = time.time() + 15
        while time.time() < deadline:
            if not proc.running():
                raise RuntimeError("%s exited: %s" % (what, proc.log()[-2000:]))
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(0.3)
            try:
                s.sendto(q, ("127.0.0.1", port))
                data = s.recv(4096)
                if data[:2] == q[:2] and (rcode is None or data[3] & 0x0F == rcode):
                    return
                time.sleep(0.1)
            except OSError:
                time.sleep(0.1)
            finally:
                s.close()
        raise RuntimeError("%s does not answer on port %d: %s" % (what, port, proc.log()[-2000:]))

    def logs(self):
        """The end of nsd's and unbound's own output: what an assertion about
        an unexpected answer shows (and running=no if one has exited)."""
        return "".join("\n--- %s running=%s\n%s" % (p.argv[0], "yes" if p.running() else "no",
                                                    p.log()[-1500:]) for p in self.procs)

    def stop(self):
        for p in reversed(self.procs):
            p.stop()
        self.procs = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class Responder:
    """test/peers/dns_responder.py on a free loopback port (UDP and TCP)."""

    def __init__(self, tmp, mode):
        self.port = harness.free_port()
        self.addr = "127.0.0.1:%d" % self.port
        self.proc = harness.Process(
            [harness.PY, os.path.join(harness.ROOT, "test/peers/dns_responder.py"),
             "--port", str(self.port), "--mode", mode],
            os.path.join(tmp, "responder-%s.stderr" % mode))
        harness.poll(lambda: "ready" in self.proc.log() or not self.proc.running(), timeout=10)
        if not self.proc.running():
            raise RuntimeError("dns_responder exited: " + self.proc.log())

    def stop(self):
        self.proc.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
