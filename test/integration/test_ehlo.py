"""The EHLO reply, rewritten as data.

  C: EHLO x.example
  B: 250-backend.test / PIPELINING / SIZE / 8BITMIME / STARTTLS / AUTH PLAIN LOGIN /
     CHUNKING / BINARYMIME / XCLIENT / XFORWARD / SMTPUTF8 / DSN / ENHANCEDSTATUSCODES
  S: 250-backend.test / PIPELINING / SIZE / 8BITMIME / SMTPUTF8 / DSN /
     ENHANCEDSTATUSCODES / STARTTLS                  (before TLS: AUTH hidden)
  S: ... AUTH PLAIN LOGIN ... (no STARTTLS)           (after TLS)
"""
from harness import ProxyCase, parse_trace, poll

KEPT = ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "DSN", "ENHANCEDSTATUSCODES")
STRIPPED = ("CHUNKING", "BINARYMIME", "XCLIENT", "XFORWARD")


def keywords(lines):
    """EHLO keywords of a reply (the first line is the greeting name)."""
    return [l[4:].split(" ")[0].upper() for l in lines[1:]]


class EhloRewrite(ProxyCase):
    listeners = {"in": {}, "smtps": {"starttls": "implicit"}, "req": {"starttls": "require"}}

    def test_before_tls(self):
        c = self.client()
        self.assertEqual(c.reply(), (220, ["220 backend.test ESMTP sink"]))
        code, lines = c.cmd("EHLO x.example")
        self.assertEqual(code, 250)
        self.assertEqual(lines[0], "250-backend.test")
        kws = keywords(lines)
        self.assertEqual(kws.count("STARTTLS"), 1, lines)  # the backend's own is gone
        self.assertNotIn("AUTH", kws)
        for gone in STRIPPED:
            self.assertNotIn(gone, kws)
        for kept in KEPT:
            self.assertEqual(kws.count(kept), 1, kept)
        self.assertIn("250-SIZE 52428800", lines)  # parameters kept verbatim
        self.assertTrue(all(l.startswith("250-") for l in lines[:-1]) and
                        lines[-1].startswith("250 "), lines)

    def test_after_tls(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        c.starttls()
        code, lines = c.cmd("EHLO x.example")
        self.assertEqual(code, 250)
        kws = keywords(lines)
        self.assertNotIn("STARTTLS", kws)
        self.assertIn("AUTH PLAIN LOGIN", [l[4:] for l in lines[1:]])
        for gone in STRIPPED:
            self.assertNotIn(gone, kws)
        for kept in KEPT:
            self.assertIn(kept, kws)
        self.assertTrue(lines[-1].startswith("250 "), lines)

    def test_starttls_without_ehlo_first(self):
        c = self.client()
        c.reply()
        c.starttls()  # RFC 3207 does not require EHLO before STARTTLS
        self.assertNotIn("STARTTLS", keywords(c.cmd("EHLO x.example")[1]))

    def test_implicit_listener(self):
        c = self.client("smtps", implicit=True)
        self.assertEqual(c.reply()[0], 220)
        kws = keywords(c.cmd("EHLO x.example")[1])
        self.assertNotIn("STARTTLS", kws)
        self.assertIn("AUTH", kws)

    def test_require_listener_offers_starttls(self):
        c = self.client("req")
        c.reply()
        kws = keywords(c.cmd("EHLO x.example")[1])
        self.assertEqual(kws.count("STARTTLS"), 1)
        self.assertNotIn("AUTH", kws)

    def test_require_listener_refuses_all_but_the_way_to_tls(self):
        """RFC 3207 4: before TLS a require listener answers every command
        but NOOP, EHLO, STARTTLS and QUIT with 530 5.7.0, so VRFY, EXPN,
        ETRN and HELP never reach the backend in plaintext; inside TLS they
        are relayed."""
        c = self.client("req")
        c.reply()
        for cmd in ("VRFY postmaster", "EXPN staff", "HELP", "ETRN example.test", "RSET",
                    "HELO x.example", "MAIL FROM:<a@example.test>", "XYZZY"):
            code, lines = c.cmd(cmd)
            self.assertEqual(code, 530, (cmd, lines))
            self.assertTrue(lines[0].startswith("530 5.7.0 Must issue a STARTTLS command first"),
                            lines)
        self.assertEqual(c.cmd("NOOP")[0], 250)
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        before = [l.decode() for l in self.sink.lines() if not l.startswith(b"(")]
        for verb in ("VRFY", "EXPN", "HELP", "ETRN", "RSET", "HELO", "MAIL", "XYZZY"):
            self.assertFalse([l for l in before if l.upper().startswith(verb)], before)
        c.starttls()
        self.assertNotEqual(c.cmd("VRFY postmaster")[0], 530)
        self.assertTrue(poll(lambda: any(l.startswith(b"VRFY") for l in self.sink.lines())))

    def test_helo(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("HELO old.example")
        self.assertEqual((code, len(lines)), (250, 1))
        self.assertEqual(self.send_message(c)[0], 250)
        trace, _ = self.one_message()
        t = parse_trace(trace)
        self.assertEqual((t["proto"], t["helo"]), ("SMTP", "old.example"))

    def test_helo_after_starttls(self):
        c = self.client()
        c.reply()
        c.starttls()
        self.assertEqual(c.cmd("HELO old.example")[0], 250)
        self.assertEqual(self.send_message(c)[0], 250)
        t = parse_trace(self.one_message()[0])
        self.assertEqual(t["proto"], "SMTPS")
        self.assertEqual(t["version"], "TLSv1.3")


class BackendWithoutStarttls(ProxyCase):
    """A backend that knows nothing of TLS still gets STARTTLS offered for it."""
    sink_args = ("--ehlo-caps", "PIPELINING,8BITMIME")

    def test_starttls_added(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertEqual(keywords(lines), ["PIPELINING", "8BITMIME", "STARTTLS"])


class BackendWithoutEhlo(ProxyCase):
    """An RFC 821 backend (502 to EHLO, as old appliances answer): the proxy
    greets it with HELO and answers the client's EHLO itself from that
    reply, with STARTTLS (and SIZE for its limit), so the client still
    encrypts. The 502 relayed as it was made clients fall back to HELO and
    never see STARTTLS (under starttls = require: no mail at all)."""
    sink_args = ("--no-ehlo",)
    listeners = {"in": {"max_message_size": "10000"}, "req": {"starttls": "require"},
                 "xc": {"xclient": "yes"}}

    def test_xclient_listener_falls_back_too(self):
        # the EHLO that asks for XCLIENT is refused: no XCLIENT there either,
        # and the client's EHLO is answered from the HELO's reply
        c = self.client("xc")
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertEqual(code, 250, lines)
        self.assertIn("STARTTLS", keywords(lines))
        c.starttls()
        self.assertEqual(c.cmd("EHLO x.example")[0], 250)
        self.assertEqual(self.send_message(c)[0], 250)
        self.assertIn("xclient=unsupported", self.proxy.log())
        self.assertFalse([l for l in self.sink.lines() if l.startswith(b"XCLIENT")])

    def test_starttls_offered_and_used(self):
        for name in ("in", "req"):
            c = self.client(name)
            c.reply()
            code, lines = c.cmd("EHLO x.example")
            self.assertEqual(code, 250, lines)
            self.assertIn("STARTTLS", keywords(lines))
            self.assertEqual("SIZE" in keywords(lines), name == "in", lines)
            c.starttls()
            code, lines = c.cmd("EHLO x.example")
            self.assertEqual(code, 250, lines)
            self.assertNotIn("STARTTLS", keywords(lines))
            self.assertEqual(self.send_message(c)[0], 250)
            c.close()
        msgs = self.messages(2)  # one sink behind both listeners
        for m in msgs:
            self.assertIn(b" with ESMTPS id ", m.split(b"\r\n\r\n")[0])
        sent = [l for l in self.sink.lines() if not l.startswith(b"(")]
        self.assertIn(b"HELO x.example", sent)
        self.assertIn("ehlo=refused code=502 fallback=HELO", self.proxy.log())

    def test_pipelined_behind_ehlo_gets_the_502(self):
        # with a command owed behind the EHLO, the HELO could not come first
        c = self.client()
        c.reply()
        c.send(b"EHLO x.example\r\nNOOP\r\n")
        self.assertEqual(c.reply()[0], 502)
        self.assertEqual(c.reply()[0], 250)


class BackendWithOnlyGreetingLine(ProxyCase):
    """A backend whose EHLO reply is one line still gets STARTTLS added."""
    sink_args = ("--ehlo-caps", "")

    def test_single_line_ehlo(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertEqual(lines, ["250-backend.test", "250 STARTTLS"])


class NoCertificate(ProxyCase):
    tls = False

    def test_no_starttls_offered_without_cert(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertNotIn("STARTTLS", keywords(lines))
        code, lines = c.cmd("STARTTLS")
        self.assertEqual(code, 502)
        self.assertEqual(self.send_message(c)[0], 250)
        t = parse_trace(self.one_message()[0])
        self.assertEqual(t["proto"], "ESMTP")
        self.assertIsNone(t["version"])
        self.assert_never_sent(b"STARTTLS")


class BackendWithoutSize(ProxyCase):
    """A legacy backend that offers no SIZE (Postfix's smtp-sink, many old
    servers) behind a proxy with max_message_size: clients still learn the
    limit from the EHLO reply (RFC 1870), a declared size above it is refused
    at MAIL, and the SIZE= parameter that clients then send never reaches the
    backend, which may refuse it (this sink answers 555 to it)."""
    sink_args = ("--ehlo-caps", "PIPELINING,8BITMIME,ENHANCEDSTATUSCODES", "--strict-params")
    listeners = {"in": {"max_message_size": "10000"}}

    def test_limit_announced_and_size_parameter_kept_from_the_backend(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertEqual(keywords(lines),
                         ["SIZE", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "STARTTLS"])
        self.assertIn("250-SIZE 10000", lines)
        self.assertEqual(c.cmd("MAIL FROM:<a@example.test> size=600 BODY=8BITMIME")[0], 250)
        self.assertEqual(c.cmd("RCPT TO:<b@example.test>")[0], 250)
        self.assertEqual(c.cmd("DATA")[0], 354)
        c.send(b"Subject: sized\r\n\r\nbody\r\n.\r\n")
        self.assertEqual(c.reply()[0], 250)
        self.messages(1)
        mails = [l for l in self.sink.lines() if l.upper().startswith(b"MAIL")]
        self.assertEqual(mails, [b"MAIL FROM:<a@example.test> BODY=8BITMIME"])

    def test_declared_size_over_the_limit_refused_at_mail(self):
        c = self.client()
        c.reply()
        c.cmd("EHLO x.example")
        code, lines = c.cmd("MAIL FROM:<a@example.test> SIZE=10001")
        self.assertEqual(code, 552, lines)
        self.assertTrue(lines[0].startswith("552 5.3.4"), lines)
        self.assert_never_sent(b"MAIL")

    def test_smtplib_over_tls(self):
        """Python's smtplib sends size= on its own once SIZE is offered."""
        import smtplib
        import ssl
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        with smtplib.SMTP("127.0.0.1", self.proxy.port(), timeout=10) as s:
            s.starttls(context=ctx)
            s.ehlo("client.example")
            self.assertEqual(s.esmtp_features.get("size"), "10000")
            s.sendmail("a@example.test", ["b@example.test"], b"Subject: t\r\n\r\nsmall\r\n")
            with self.assertRaises(smtplib.SMTPSenderRefused) as e:
                s.sendmail("a@example.test", ["b@example.test"], b"x" * 20000)
            self.assertEqual(e.exception.smtp_code, 552)
        self.messages(1)
        self.assert_never_sent(b"SIZE=")


class BackendWithoutSizeNoLimit(ProxyCase):
    """Without max_message_size the proxy announces no SIZE and relays MAIL
    exactly as the client wrote it (here to a backend that refuses SIZE=)."""
    sink_args = ("--ehlo-caps", "PIPELINING,8BITMIME", "--strict-params")

    def test_nothing_added_nothing_removed(self):
        c = self.client()
        c.reply()
        code, lines = c.cmd("EHLO x.example")
        self.assertNotIn("SIZE", keywords(lines))
        code, lines = c.cmd("MAIL FROM:<a@example.test> SIZE=600")
        self.assertEqual(code, 555, lines)
        self.assertIn(b"MAIL FROM:<a@example.test> SIZE=600", self.sink.lines())
