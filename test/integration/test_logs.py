"""Logs: with log_format = json every line is one JSON object, and the
session and message events carry the fields the README documents (the
answer to "was this mail encrypted, and with what?")."""
import json
import os
import shutil
import unittest

from harness import BODY, NextHop, Proxy, ProxyCase
from harness import CERTS, log_fields, poll, tmpdir
from test_outbound import attempt

INBOUND_SESSION = ("ts level event id listener client tls cipher sni backend helo messages "
                   "rejected bytes_in bytes_out result duration").split()
OUTBOUND_SESSION = ("ts level event id listener client next_hop policy tls cipher verify "
                    "decision helo messages rejected bytes_in bytes_out result duration").split()
MESSAGE = "ts level event id client from rcpts size tls cipher result code reply".split()
OUTBOUND_MESSAGE = ("ts level event id client from rcpts size next_hop tls cipher verify result "
                    "code reply").split()


class JsonLogs(ProxyCase):
    proxy_extra = {"log_format": "json"}

    def events(self, proxy):
        out = []
        for line in proxy.log().splitlines():
            if line.startswith("{"):
                obj = json.loads(line)  # every line parses
                self.assertIsInstance(obj, dict)
                for v in obj.values():
                    self.assertIsInstance(v, str)
                out.append(obj)
            else:
                self.fail("not a JSON line: %r" % line)
        return out

    def test_refused_message_is_one_event(self):
        # the refusal's reply (with its CRLF) used to split the event in two
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: bare\r\n\r\na\nb\r\n.\r\n")
        self.assertEqual(c.reply()[0], 554)
        proxy = self.proxy
        self.stop_proxy()
        msgs = [e for e in self.events(proxy) if e["event"] == "message"]
        self.assertEqual([(m["result"], m["reason"][:9]) for m in msgs], [("refused", "554 5.6.0")],
                         msgs)
        self.assertTrue(msgs[0]["reason"].endswith("message refused"), msgs)

    def test_inbound_tls_session_and_message(self):
        c = self.ready_client(helo='weird"helo\\x')
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertEqual(c.cmd("QUIT")[0], 221)
        c.close()
        proxy = self.proxy
        self.stop_proxy()
        ev = self.events(proxy)
        kinds = [e["event"] for e in ev]
        self.assertEqual(kinds[:2], ["fd_limit", "listen"])
        self.assertIn("start", kinds)
        self.assertEqual(kinds[-1], "stop")
        sess = [e for e in ev if e["event"] == "session"]
        msgs = [e for e in ev if e["event"] == "message"]
        self.assertEqual(len(sess), 1)
        self.assertEqual(len(msgs), 1)
        self.assertEqual(sorted(sess[0]), sorted(INBOUND_SESSION))
        self.assertEqual(sorted(msgs[0]), sorted(MESSAGE))
        s, m = sess[0], msgs[0]
        self.assertEqual(s["level"], "info")
        self.assertEqual(s["tls"], "TLSv1.3")
        self.assertTrue(s["cipher"].startswith("TLS_"), s)
        self.assertEqual(s["result"], "ok")
        self.assertEqual(s["messages"], "1")
        self.assertEqual(s["helo"], "weird\\x22helo\\x5cx")  # escaped peer text
        self.assertTrue(s["client"].startswith("127.0.0.1:"))
        self.assertRegex(s["duration"], r"^\d+\.\d{3}s$")
        self.assertEqual(m["id"], s["id"] + ".1")
        self.assertEqual((m["tls"], m["cipher"]), (s["tls"], s["cipher"]))
        self.assertEqual((m["result"], m["code"]), ("accepted", "250"))
        self.assertEqual(m["from"], "<a@example.test>")  # the reverse-path as sent
        self.assertGreaterEqual(int(m["size"]), len(BODY) - 1)


    def test_free_text_warning_keeps_its_text(self):
        # A warning that is a sentence, not key=value, keeps its text in
        # "msg" (the root warning used to become {"event":"privileges"}).
        if os.geteuid() != 0:
            self.skipTest("the privileges warning needs root")
        proxy = self.proxy
        self.stop_proxy()
        warn = [e for e in self.events(proxy) if e["event"] == "privileges"]
        self.assertEqual(len(warn), 1, proxy.log())
        self.assertEqual(sorted(warn[0]), ["event", "level", "msg", "ts"])
        self.assertTrue(warn[0]["msg"].startswith("WARNING: still running as root after start-up"),
                        warn)


class PipelinedTransactions(ProxyCase):
    """A message line describes its own transaction when the next one is
    pipelined behind its final dot, or when a group resets or refuses part
    of an envelope: `from` is the sender of the MAIL the backend accepted
    and `rcpts` the RCPTs it accepted in that transaction, as the replies
    (which come in command order) tell. The backend here rejects every
    message at its dot (the line is written then, with the next
    transaction's commands already sent) and every recipient "nobody"."""

    sink_args = ("--reject-data", "--reject-rcpt", "nobody")

    def message_lines(self, n):
        self.assertTrue(poll(lambda: len(self.proxy.log_lines("message")) >= n), self.proxy.log())
        return [log_fields(l) for l in self.proxy.log_lines("message")]

    def test_each_message_line_has_its_own_envelope(self):
        c = self.ready_client(tls=False)
        c.send(b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(3)], [250, 250, 354])
        # the next transaction pipelined behind the dot
        c.send(b"one\r\n.\r\nMAIL FROM:<second@x.test>\r\nRCPT TO:<c@x.test>\r\n"
               b"RCPT TO:<d@x.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(5)], [554, 250, 250, 250, 354])
        c.send(b"two\r\n.\r\n")
        self.assertEqual(c.reply()[0], 554)
        # a transaction reset inside the group, then a new one
        c.send(b"MAIL FROM:<x@x.test>\r\nRCPT TO:<e@x.test>\r\nRSET\r\n"
               b"MAIL FROM:<third@x.test>\r\nRCPT TO:<f@x.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(6)], [250, 250, 250, 250, 250, 354])
        c.send(b"three\r\n.\r\n")
        self.assertEqual(c.reply()[0], 554)
        # a refused (nested) MAIL and a refused RCPT change nothing
        c.send(b"MAIL FROM:<fourth@x.test>\r\nRCPT TO:<g@x.test>\r\nMAIL FROM:<nested@x.test>\r\n"
               b"RCPT TO:<nobody@x.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(5)], [250, 250, 503, 550, 354])
        c.send(b"four\r\n.\r\nQUIT\r\n")
        self.assertEqual([c.reply()[0] for _ in range(2)], [554, 221])
        m = self.message_lines(4)
        self.assertEqual([(x["from"], x["rcpts"], x["code"]) for x in m],
                         [("<a@x.test>", "1", "554"), ("<second@x.test>", "2", "554"),
                          ("<third@x.test>", "1", "554"), ("<fourth@x.test>", "1", "554")], m)

    def test_next_transaction_in_the_dots_write_inside_tls(self):
        # the same over TLS: RSET and the whole next transaction in the
        # write that ends the first message
        c = self.ready_client()
        self.assertEqual(c.cmd("MAIL FROM:<a@x.test>")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@x.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"one\r\n.\r\nRSET\r\nMAIL FROM:<second@x.test>\r\nRCPT TO:<c@x.test>\r\n"
               b"RCPT TO:<nobody@x.test>\r\nRCPT TO:<d@x.test>\r\nDATA\r\n")
        self.assertEqual([c.reply()[0] for _ in range(7)], [554, 250, 250, 250, 550, 250, 354])
        c.send(b"two\r\n.\r\n")
        self.assertEqual(c.reply()[0], 554)
        m = self.message_lines(2)
        self.assertEqual([(x["from"], x["rcpts"], x["tls"]) for x in m],
                         [("<a@x.test>", "1", "TLSv1.3"), ("<second@x.test>", "2", "TLSv1.3")], m)


class JsonLogsOutbound(unittest.TestCase):
    def run_outbound(self, mode):
        """One message through an outbound relay listener to a next hop
        in `mode`; returns the JSON events of the proxy's log."""
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        hop = NextHop(tmp, mode)
        self.addCleanup(hop.stop)
        proxy = Proxy(tmp, {"out": {"mode": "outbound", "route": "relay:127.0.0.1:%d" % hop.port,
                                    "tls": "verify", "servername": "mx.example.test",
                                    "ca_file": os.path.join(CERTS, "ca.pem")}},
                      tls=False, proxy_extra={"log_format": "json"})
        self.addCleanup(proxy.stop)
        self.hop_port = hop.port
        self.result = attempt(proxy.port("out"))
        self.assertEqual(proxy.stop(), 0)
        return [json.loads(l) for l in proxy.log().splitlines()]

    def test_message_says_how_it_left(self):
        # the legacy server's side is plaintext by design: the message line
        # tells the next hop's TLS (the answer to "was it encrypted?")
        ev = self.run_outbound("good")
        self.assertEqual(self.result[0], "delivered")
        msgs = [e for e in ev if e["event"] == "message"]
        self.assertEqual(len(msgs), 1)
        m = msgs[0]
        self.assertEqual(sorted(m), sorted(OUTBOUND_MESSAGE))
        self.assertTrue(m["tls"].startswith("TLSv1."), m)
        self.assertTrue(m["cipher"].startswith("TLS_"), m)
        self.assertEqual((m["verify"], m["next_hop"]), ("ok", "127.0.0.1:%d" % self.hop_port))
        self.assertEqual((m["result"], m["code"]), ("accepted", "250"))

    def test_temporary_failure_is_tempfail(self):
        # as stp_messages_total{result="tempfail"} counts it
        ev = self.run_outbound("dot-451")
        self.assertEqual(self.result[:2], ("refused", 451))
        m = [e for e in ev if e["event"] == "message"]
        self.assertEqual([(x["result"], x["code"]) for x in m], [("tempfail", "451")], m)

    def test_outbound_session_fields(self):
        ev = self.run_outbound("good")
        self.assertEqual(self.result[0], "delivered")
        sess = [e for e in ev if e["event"] == "session"]
        self.assertEqual(len(sess), 1)
        self.assertEqual(sorted(sess[0]), sorted(OUTBOUND_SESSION))
        self.assertEqual((sess[0]["verify"], sess[0]["decision"]), ("ok", "tls"))
        self.assertTrue(sess[0]["tls"].startswith("TLSv1."), sess[0])
        hops = [e for e in ev if e["event"] == "next_hop"]
        self.assertEqual(len(hops), 1)
        for k in ("id", "next_hop", "policy", "tls", "cipher", "verify", "decision"):
            self.assertIn(k, hops[0])


if __name__ == "__main__":
    unittest.main()
