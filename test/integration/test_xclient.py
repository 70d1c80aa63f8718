"""XCLIENT toward the backend (`xclient = yes` on an inbound listener).

With a real Postfix smtpd as the backend (a private instance: its own
configuration, queue and log directory (postfix_instance.py) started and
stopped by this test, /etc/postfix never read): the proxy reads a PROXY
header naming the client 192.0.2.7:40000 and Postfix logs that address, not
the proxy's; Postfix's own EHLO reply is what the client sees, exactly once;
after STARTTLS the same backend session keeps the address (no second
XCLIENT); a HELO client is passed on with PROTO=SMTP and its HELO name; a
first EHLO that Postfix refuses (no name) does not end the XCLIENT phase:
envelope commands are refused until XCLIENT has been accepted, so Postfix
never takes the client for the proxy (its mynetworks) and relays.

With a scripted backend: the exact command sequence (EHLO, XCLIENT, EHLO;
after STARTTLS RSET and EHLO, never XCLIENT again); a backend without
XCLIENT gets the session as it is and the proxy logs xclient=unsupported
once; a backend that offers XCLIENT but refuses it ends the session with
421 4.3.0 before any envelope reaches it.
"""
import shutil
import socket
import threading
import unittest

import postfix_instance
from harness import BODY, Client, Proxy, log_fields, poll, tmpdir

# The private Postfix's smtpd trusts XCLIENT from the proxy, logs the client
# port, refuses one recipient (so Postfix logs proto= and helo=) and discards
# the mail it takes for example.test.
XCLIENT_MAIN = {
    "mydestination": "example.test",
    "smtpd_authorized_xclient_hosts": "127.0.0.0/8",
    "smtpd_client_port_logging": "yes",
    "smtpd_recipient_restrictions":
        "check_recipient_access inline:{ refuse@example.test=REJECT }, "
        "permit_mynetworks, reject_unauth_destination",
    "local_transport": "discard:",
    "default_transport": "discard:",
}


def proxy_header(src="192.0.2.7", port=40000):
    return ("PROXY TCP4 %s 127.0.0.1 %d 25\r\n" % (src, port)).encode()


@unittest.skipIf(postfix_instance.available(), postfix_instance.available() or "")
class XclientPostfix(unittest.TestCase):
    timeout = 120

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pf = postfix_instance.PrivatePostfix(main=XCLIENT_MAIN)
        self.addCleanup(self.pf.stop)
        self.proxy = Proxy(self.tmp, {"in": {
            "backend": "127.0.0.1:%d" % self.pf.port, "xclient": "yes",
            "proxy_protocol": "yes", "proxy_from": "127.0.0.1/32"}})
        self.addCleanup(self.proxy.stop)

    def connect(self, src="192.0.2.7", port=40000):
        c = Client(self.proxy.port("in"))
        self.addCleanup(c.close)
        c.send(proxy_header(src, port))
        code, lines = c.reply()
        self.assertEqual(code, 220, lines)
        self.assertIn("legacy.example.test", lines[0])
        return c

    def one_ehlo(self, c, helo="client.example"):
        """EHLO; exactly one reply (Postfix's, rewritten), nothing after it."""
        code, lines = c.cmd("EHLO " + helo)
        self.assertEqual(code, 250, lines)
        self.assertTrue(lines[0].startswith("250-legacy.example.test"), lines)
        self.assertFalse([l for l in lines if "XCLIENT" in l.upper()], lines)
        self.assertTrue(c.silent(0.5), "more after the EHLO reply: %r" % c.buf)
        return lines

    def deliver(self, c, rcpt="b@example.test"):
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<%s>" % rcpt)[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY + b".\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("QUIT")[0], 221)

    def test_postfix_logs_the_real_client(self):
        c = self.connect()
        lines = self.one_ehlo(c)
        self.assertIn("STARTTLS", [l[4:] for l in lines])  # added by the proxy
        self.deliver(c)
        self.pf.wait_log(r"\]: [0-9A-F]+: client=unknown\[192\.0\.2\.7\]:40000")
        self.assertNotIn("client=localhost[127.0.0.1]", self.pf.log())
        poll(lambda: self.proxy.log_lines("backend"))
        xc = [log_fields(l) for l in self.proxy.log_lines("backend") if "xclient=" in l]
        self.assertEqual([(f["xclient"], f["client"]) for f in xc],
                         [("ok", "192.0.2.7:40000")], self.proxy.log())

    def test_starttls_keeps_the_address_without_a_second_xclient(self):
        c = self.connect(port=40001)
        self.one_ehlo(c)
        c.starttls()
        self.one_ehlo(c)
        self.deliver(c)
        self.pf.wait_log(r"client=unknown\[192\.0\.2\.7\]:40001")
        # Postfix would log a second XCLIENT from 192.0.2.7 as not authorized
        self.assertNotIn("not authorized", self.pf.log())
        poll(lambda: self.proxy.log_lines("session"))
        self.assertEqual(len([l for l in self.proxy.log_lines("backend") if "xclient=" in l]), 1)

    def test_helo_client_is_passed_as_smtp(self):
        c = self.connect(port=40002)
        code, lines = c.cmd("HELO old.client.example")
        self.assertEqual((code, len(lines)), (250, 1), lines)
        self.assertTrue(c.silent(0.5), c.buf)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<refuse@example.test>")[0], 554)
        self.pf.wait_log(r"reject: RCPT from unknown\[192\.0\.2\.7\]:40002: .* "
                         r"proto=SMTP helo=<old\.client\.example>")

    def test_refused_first_ehlo_does_not_skip_xclient(self):
        # A nameless EHLO gets Postfix's 501: nothing learned. Until XCLIENT
        # has been accepted, nothing the client's address matters for
        # reaches Postfix (which trusts the proxy's address: mynetworks).
        c = self.connect(port=40003)
        self.assertEqual(c.cmd("EHLO")[0], 501)
        for cmd in ("MAIL FROM:<a@evil.example>", "VRFY root", "ETRN example.test"):
            self.assertEqual(c.cmd(cmd)[0], 503, cmd)
        self.one_ehlo(c, "evil.example")
        self.assertEqual(c.cmd("MAIL FROM:<a@evil.example>")[0], 250)
        code, lines = c.cmd("RCPT TO:<victim@remote.example>")
        self.assertEqual(code, 554, lines)  # relaying refused: a client not in mynetworks
        self.pf.wait_log(r"reject: RCPT from unknown\[192\.0\.2\.7\]:40003: 554 5\.7\.1 "
                         r"<victim@remote\.example>: Relay access denied")
        self.assertNotIn("RCPT from localhost[127.0.0.1]", self.pf.log())
        self.assertNotIn("VRFY", self.pf.log())
        xc = [log_fields(l) for l in self.proxy.log_lines("backend") if "xclient=" in l]
        self.assertEqual([(f["xclient"], f["client"]) for f in xc],
                         [("ok", "192.0.2.7:40003")], self.proxy.log())


class ScriptedBackend:
    """A backend run in a thread: `xclient` is None (not offered), "ok"
    (220 and a new session) or "refuse" (550). Records every line."""

    def __init__(self, xclient):
        self.xclient = xclient
        self.lines = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.stopped = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        f = conn.makefile("rb")
        greeting = "backend.test"
        conn.sendall(b"220 backend.test ESMTP scripted\r\n")
        try:
            in_data = False
            for raw in f:
                line = raw.rstrip(b"\r\n").decode("latin-1")
                if in_data:
                    if line == ".":
                        in_data = False
                        conn.sendall(b"250 2.0.0 queued\r\n")
                    continue
                self.lines.append(line)
                verb = line.split(" ")[0].upper()
                if verb == "EHLO":
                    caps = ["PIPELINING", "8BITMIME"]
                    if self.xclient:
                        caps.append("XCLIENT NAME ADDR PORT PROTO HELO LOGIN")
                    out = ["250-" + greeting] + ["250-" + c for c in caps[:-1]] + \
                        ["250 " + caps[-1]]
                    conn.sendall(("\r\n".join(out) + "\r\n").encode())
                elif verb == "HELO":
                    conn.sendall(("250 " + greeting + "\r\n").encode())
                elif verb == "XCLIENT":
                    if self.xclient == "ok":
                        greeting = "after-xclient.test"
                        conn.sendall(b"220 after-xclient.test ESMTP scripted\r\n")
                    else:
                        conn.sendall(b"550 5.7.0 Error: insufficient authorization\r\n")
                elif verb == "DATA":
                    in_data = True
                    conn.sendall(b"354 go ahead\r\n")
                elif verb == "QUIT":
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    break
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")
        except OSError:
            pass
        finally:
            conn.close()

    def stop(self):
        self.stopped = True
        self.sock.close()


class XclientScripted(unittest.TestCase):
    def start(self, xclient):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.be = ScriptedBackend(xclient)
        self.addCleanup(self.be.stop)
        self.proxy = Proxy(self.tmp, {"in": {
            "backend": "127.0.0.1:%d" % self.be.port, "xclient": "yes"}})
        self.addCleanup(self.proxy.stop)
        c = Client(self.proxy.port("in"))
        self.addCleanup(c.close)
        self.assertEqual(c.reply()[0], 220)
        return c

    def xclient_logs(self):
        return [log_fields(l) for l in self.proxy.log_lines("backend") if "xclient=" in l]

    def test_sequence_and_no_second_xclient_after_starttls(self):
        c = self.start("ok")
        port = c.sock.getsockname()[1]
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(lines[0], "250-after-xclient.test")  # the post-XCLIENT reply, once
        self.assertTrue(c.silent(0.5), c.buf)
        c.starttls()
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(code, 250, lines)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(poll(lambda: "QUIT" in self.be.lines))
        self.assertEqual(self.be.lines, [
            "EHLO client.example",
            "XCLIENT ADDR=127.0.0.1 PORT=%d HELO=client.example PROTO=ESMTP" % port,
            "EHLO client.example", "RSET", "EHLO client.example",
            "MAIL FROM:<a@example.test>", "QUIT"])

    def test_pipelined_commands_wait_for_the_exchange(self):
        c = self.start("ok")
        c.send(b"EHLO client.example\r\nNOOP\r\n")
        self.assertEqual(c.reply()[1][0], "250-after-xclient.test")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(poll(lambda: "QUIT" in self.be.lines))
        self.assertEqual([l.split(" ")[0] for l in self.be.lines],
                         ["EHLO", "XCLIENT", "EHLO", "NOOP", "QUIT"])

    def test_unsupported_is_relayed_without_xclient(self):
        c = self.start(None)
        code, lines = c.cmd("EHLO client.example")
        self.assertEqual(lines[0], "250-backend.test")
        self.assertTrue(c.silent(0.5), c.buf)
        self.assertEqual(c.cmd("EHLO again.example")[0], 250)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(BODY + b".\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")))
        self.assertFalse([l for l in self.be.lines if l.upper().startswith("XCLIENT")])
        self.assertEqual([f["xclient"] for f in self.xclient_logs()], ["unsupported"],
                         self.proxy.log())

    def test_unsupported_helo_client_gets_its_helo_reply(self):
        c = self.start(None)
        code, lines = c.cmd("HELO old.example")
        self.assertEqual((code, lines), (250, ["250 backend.test"]))
        self.assertEqual(c.cmd("QUIT")[0], 221)
        self.assertTrue(poll(lambda: "QUIT" in self.be.lines))
        self.assertEqual(self.be.lines, ["EHLO old.example", "HELO old.example", "QUIT"])

    def test_refused_xclient_is_421_and_nothing_else_reaches_the_backend(self):
        c = self.start("refuse")
        c.send(b"EHLO client.example\r\nMAIL FROM:<a@example.test>\r\n")
        code, lines = c.reply()
        self.assertEqual(code, 421, lines)
        self.assertTrue(lines[0].startswith("421 4.3.0 "), lines)
        self.assertTrue(c.closed())
        self.assertTrue(poll(lambda: self.proxy.log_lines("session")))
        verbs = [l.split(" ")[0] for l in self.be.lines]
        self.assertEqual(verbs[:2], ["EHLO", "XCLIENT"], verbs)
        self.assertEqual(set(verbs[2:]) - {"QUIT"}, set(), verbs)
        self.assertEqual([(f["xclient"], f["code"]) for f in self.xclient_logs()],
                         [("refused", "550")], self.proxy.log())
        sess = log_fields(self.proxy.log_lines("session")[0])
        self.assertEqual(sess["result"], "xclient-refused")
