"""Integration test harness: real processes on loopback, stopped by PID.

Env: STP_BIN (proxy binary, default bazel-bin/proxy/smtp-tls-proxy),
STP_CERTS (directory made by test/certs/gen.sh).
"""
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.environ.get("STP_BIN", os.path.join(ROOT, "bazel-bin/proxy/smtp-tls-proxy"))
CERTS = os.environ.get("STP_CERTS", "")
SINK = os.path.join(ROOT, "test/peers/sink.py")
NEXTHOP = os.path.join(ROOT, "test/peers/nexthop.py")
PY = sys.executable or "python3"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, timeout=10, host="127.0.0.1"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d not listening" % port)


def poll(fn, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    return fn()


class Process:
    """A child process we own; stop() ends it by PID only."""

    def __init__(self, argv, stderr_path, env=None):
        self.stderr_path = stderr_path
        self.errf = open(stderr_path, "wb")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.errf,
                                  stdin=subprocess.DEVNULL, env=env)

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.p.poll() is None:
            self.p.send_signal(sig)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        self.errf.close()
        return self.p.returncode

    def log(self):
        if not self.errf.closed:
            self.errf.flush()
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")


class Sink:
    def __init__(self, tmp, *args):
        self.port = free_port()
        self.maildir = os.path.join(tmp, "mail-%d" % self.port)
        self.transcript = os.path.join(tmp, "transcript-%d" % self.port)
        open(self.transcript, "wb").close()
        self.proc = Process([PY, SINK, "--listen", "127.0.0.1:%d" % self.port, "--maildir",
                             self.maildir, "--transcript", self.transcript] + list(args),
                            os.path.join(tmp, "sink-%d.log" % self.port))
        line = self.proc.p.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError("sink did not start: " + self.proc.log())

    def messages(self):
        if not os.path.isdir(self.maildir):
            return []
        out = []
        for n in sorted(os.listdir(self.maildir)):
            if n.endswith(".eml"):
                with open(os.path.join(self.maildir, n), "rb") as f:
                    out.append(f.read())
        return out

    def lines(self):
        with open(self.transcript, "rb") as f:
            return f.read().splitlines()

    def stop(self):
        self.proc.stop()


class Proxy:
    """Writes an INI and runs the proxy. `listeners` maps name -> dict of keys."""

    def __init__(self, tmp, listeners, tls=True, proxy_extra=None):
        self.tmp = tmp
        self.ports = {}
        lines = ["[proxy]", "hostname = mx.example.test", "log_level = info"]
        for k, v in (proxy_extra or {}).items():
            lines.append("%s = %s" % (k, v))
        if tls:
            lines += ["[tls]", "cert = %s/ecdsa.pem" % CERTS, "key = %s/ecdsa.key" % CERTS,
                      "cert = %s/rsa.pem" % CERTS, "key = %s/rsa.key" % CERTS]
        for name, keys in listeners.items():
            port = free_port()
            self.ports[name] = port
            lines.append("[listener:%s]" % name)
            lines.append("mode = %s" % keys.get("mode", "inbound"))
            lines.append("listen = 127.0.0.1:%d" % port)
            for k, v in keys.items():
                if k != "mode":
                    lines.append("%s = %s" % (k, v))
        self.ini = os.path.join(tmp, "proxy-%d.ini" % free_port())
        with open(self.ini, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.proc = Process([BIN, "-c", self.ini], self.ini + ".log")
        # Ready once it logged its start; probing the ports would open sessions.
        if not poll(lambda: " start version=" in self.proc.log() or self.proc.p.poll() is not None):
            raise RuntimeError("proxy did not start:\n" + self.proc.log())
        if self.proc.p.poll() is not None:
            raise RuntimeError("proxy exited:\n" + self.proc.log())

    def port(self, name="in"):
        return self.ports[name]

    def stop(self):
        """SIGTERM; returns the exit code (non-zero under ASan when leaking)."""
        return self.proc.stop()

    def log(self):
        return self.proc.log()


def client_ctx(version=None):
    ctx = ssl.create_default_context(cafile=os.path.join(CERTS, "ca.pem"))
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx


class Client:
    """A raw SMTP client that reads multi-line replies."""

    def __init__(self, port, timeout=10, implicit=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if implicit:
            self.sock = client_ctx().wrap_socket(self.sock, server_hostname="mx.example.test")
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def _line(self):
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed; pending %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def reply(self):
        """Returns (code, [lines]) of the next complete reply."""
        lines = []
        while True:
            line = self._line()
            lines.append(line.decode("utf-8", "replace"))
            if len(line) < 4 or line[3:4] != b"-":
                return int(line[:3]), lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def starttls(self, version=None, sni="mx.example.test"):
        code, _ = self.cmd("STARTTLS")
        assert code == 220, code
        assert self.buf == b"", "bytes after 220: %r" % self.buf
        self.sock = client_ctx(version).wrap_socket(self.sock, server_hostname=sni)
        return self.sock.version()

    def closed(self, timeout=5):
        """True if the server closes the connection (reading EOF) within timeout."""
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except (socket.timeout, ssl.SSLError):
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def split_trace(msg):
    """Returns (Received header text, rest) of a stored message."""
    assert msg.startswith(b"Received: "), msg[:200]
    i = msg.find(b"\r\n", 0)
    while msg[i + 2:i + 3] == b"\t":
        i = msg.find(b"\r\n", i + 2)
    return msg[:i + 2].decode(), msg[i + 2:]


def tmpdir():
    return tempfile.mkdtemp(prefix="stp-it-")


class NextHop:
    """A scripted receiving MTA (test/peers/nexthop.py) with a certificate and a mode."""

    def __init__(self, tmp, mode="good", cert="ecdsa"):
        self.port = free_port()
        self.maildir = os.path.join(tmp, "nexthop-%d" % self.port)
        key = cert
        self.proc = Process([PY, NEXTHOP, "--listen", "127.0.0.1:%d" % self.port, "--maildir",
                             self.maildir, "--cert", os.path.join(CERTS, cert + ".pem"), "--key",
                             os.path.join(CERTS, key + ".key"), "--mode", mode],
                            os.path.join(tmp, "nexthop-%d.log" % self.port))
        line = self.proc.p.stdout.readline()
        if b"ready" not in line:
            raise RuntimeError("nexthop did not start: " + self.proc.log())

    def stored(self):
        return sorted(os.listdir(self.maildir)) if os.path.isdir(self.maildir) else []

    def stop(self):
        self.proc.stop()
