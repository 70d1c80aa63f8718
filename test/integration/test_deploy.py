"""Shipped deployment files stay valid: every example INI passes --check,
the example INI documents every key of proxy/config.c with its default, the
Kubernetes and compose YAML parse and line up with their INI, the systemd
unit passes systemd-analyze verify, haproxy.cfg passes haproxy -c. (The
container image has its own, slower test: test_container.py.)"""
import glob
import os
import re
import shlex
import shutil
import subprocess
import unittest
import json

from harness import BIN, CERTS, ROOT, Process, free_port, tmpdir, wait_port

DEPLOY = os.path.join(ROOT, "deploy")


def with_test_certs(text):
    """The example's certificate paths pointed at the generated test certs."""
    return re.sub(r"/etc/smtp-tls-proxy/(?:tls/)?(ecdsa|rsa)\.(pem|key)",
                  lambda m: os.path.join(CERTS, "%s.%s" % (m.group(1), m.group(2))), text)


CONFIG_C = os.path.join(ROOT, "proxy", "config.c")
EXAMPLE_INI = os.path.join(DEPLOY, "smtp-tls-proxy.example.ini")
DEBIAN_MAIN_CF = "/usr/share/postfix/main.cf.debian"


def directive_tables():
    """{table: [(key, default or None)]} read from proxy/config.c's
    `static const directive_t NAME_directives[]` tables: the keys the loader
    accepts, so a key added there cannot go undocumented."""
    with open(CONFIG_C) as f:
        text = f.read()
    tables = {}
    for m in re.finditer(r"static const directive_t (\w+)_directives\[\] = \{(.*?)\n\};", text, re.S):
        body = re.sub(r"/\*.*?\*/", "", m.group(2), flags=re.S)
        rows = re.findall(r'\{"([a-z_0-9]+)",\s*\w+,\s*[^,]+,\s*(NULL|"[^"]*")', body)
        tables[m.group(1)] = [(k, None if d == "NULL" else d[1:-1]) for k, d in rows]
    return tables


def example_keys():
    """{section kind: {key: [values]}} of every "key = value" line of the
    example INI, live or commented out (";key", "; key", "#key"), where the
    section kind is proxy, tls, listener or policy (headers may be commented
    out too)."""
    kinds = {}
    kind = None
    with open(EXAMPLE_INI) as f:
        for line in f:
            h = re.match(r"^[;#]?\[(proxy|tls|listener|policy)\b[^\]]*\]\s*$", line)
            if h:
                kind = h.group(1)
                continue
            k = re.match(r"^([;#] ?)?([a-z_0-9]+) =(?: (.*?))?\s*$", line)
            if k and kind:
                value = (k.group(3) or "").split(" ; ")[0].strip()
                kinds.setdefault(kind, {}).setdefault(k.group(2), []).append(
                    (k.group(1) in (";", "#", None), value))
    return kinds


class ExampleDocumentsEveryKey(unittest.TestCase):
    """deploy/smtp-tls-proxy.example.ini shows every key proxy/config.c
    accepts, in its section, and its default as a ";key = DEFAULT" line."""

    def setUp(self):
        self.tables = directive_tables()
        self.example = example_keys()

    def test_config_c_tables_are_found(self):
        # Guards the extraction: a changed table layout must fail here, not
        # silently check nothing.
        self.assertEqual(sorted(self.tables), ["listener", "policy", "proxy", "tls"])
        keys = {k for rows in self.tables.values() for k, _ in rows}
        for key in ("hostname", "metrics", "cert", "listen", "proxy_from", "route", "session_timeout"):
            self.assertIn(key, keys)
        self.assertIn(("shutdown_grace", "30s"), self.tables["proxy"])
        self.assertGreater(sum(len(rows) for rows in self.tables.values()), 50)

    def test_every_key_is_documented_in_its_section(self):
        missing = ["[%s] %s" % (table, key) for table, rows in sorted(self.tables.items())
                   for key, _ in rows if key not in self.example.get(table, {})]
        self.assertEqual(missing, [], "keys of proxy/config.c missing from %s" % EXAMPLE_INI)

    def test_every_default_is_shown(self):
        wrong = []
        for table, rows in sorted(self.tables.items()):
            for key, default in rows:
                if default is None:  # computed or none: described in prose
                    continue
                shown = self.example.get(table, {}).get(key, [])
                # a default line: the marker right before the key, no space
                if (True, default) not in shown:
                    wrong.append("[%s] %s = %r (shown: %r)" % (table, key, default, shown))
        self.assertEqual(wrong, [])

    def test_no_unknown_key_is_documented(self):
        known = {table: {k for k, _ in rows} for table, rows in self.tables.items()}
        unknown = ["[%s] %s" % (kind, key) for kind, keys in sorted(self.example.items())
                   for key in keys if key not in known.get(kind, set())]
        self.assertEqual(unknown, [])


# Backend names of the shipped examples that only resolve where they are
# deployed (host names are looked up when the configuration is loaded).
DEPLOYED_NAMES = ("legacy-mta.mail.svc.cluster.local", "legacy-mta")


def for_this_host(text):
    """An example made loadable here: test certificates, deployed names as
    loopback."""
    text = with_test_certs(text)
    for name in DEPLOYED_NAMES:
        text = re.sub(r"\b%s:" % re.escape(name), "127.0.0.1:", text)
    return text


class ExampleConfigs(unittest.TestCase):
    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_every_example_ini_passes_check(self):
        paths = sorted(glob.glob(os.path.join(DEPLOY, "**", "*.ini"), recursive=True))
        self.assertIn(os.path.join(DEPLOY, "smtp-tls-proxy.example.ini"), paths)
        for path in paths:
            with open(path) as f:
                text = for_this_host(f.read())
            copy = os.path.join(self.tmp, os.path.basename(path))
            with open(copy, "w") as f:
                f.write(text)
            out = subprocess.run([BIN, "--check", "-c", copy], capture_output=True, timeout=20)
            self.assertEqual(out.returncode, 0, "%s: %s" % (path, (out.stderr + out.stdout).decode()))

    def test_check_still_refuses_a_broken_copy(self):
        # Guards the test above against a --check that accepts anything.
        path = os.path.join(DEPLOY, "smtp-tls-proxy.example.ini")
        with open(path) as f:
            text = with_test_certs(f.read()) + "\n[proxy]\nno_such_key = 1\n"
        copy = os.path.join(self.tmp, "broken.ini")
        with open(copy, "w") as f:
            f.write(text)
        out = subprocess.run([BIN, "--check", "-c", copy], capture_output=True, timeout=20)
        self.assertNotEqual(out.returncode, 0)
        self.assertIn("no_such_key", (out.stderr + out.stdout).decode())


def http_status(port, path):
    """The status code of GET PATH on 127.0.0.1:PORT."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    finally:
        conn.close()


def load_yaml_documents(path):
    """Every YAML document in PATH, parsed by PyYAML (Debian's python3-yaml,
    run through /usr/bin/python3 when this interpreter lacks it)."""
    prog = ("import json, sys, yaml\n"
            "print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))")
    for py in ("python3", "/usr/bin/python3"):
        out = subprocess.run([py, "-c", prog, path], capture_output=True, timeout=30)
        if out.returncode == 0:
            return json.loads(out.stdout)
        if b"No module named" not in out.stderr:
            raise AssertionError("%s: %s" % (path, out.stderr.decode()))
    raise unittest.SkipTest("no PyYAML (python3-yaml)")


class ContainerDefault(unittest.TestCase):
    """deploy/container/smtp-tls-proxy.ini: the README runs the image with
    --network host, where a wildcard metrics address would open the
    unauthenticated endpoint on every address of the host."""
    INI = os.path.join(DEPLOY, "container", "smtp-tls-proxy.ini")

    def test_metrics_on_loopback(self):
        with open(self.INI) as f:
            values = re.findall(r"^metrics = (.*?)\s*$", f.read(), re.M)
        self.assertEqual(values, ["127.0.0.1:9925"])

    def test_healthcheck_asks_the_metrics_address(self):
        with open(os.path.join(DEPLOY, "container", "Containerfile")) as f:
            self.assertIn("/dev/tcp/127.0.0.1/9925", f.read())


class Kubernetes(unittest.TestCase):
    K8S = os.path.join(DEPLOY, "k8s")

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.objects = {}
        for path in sorted(glob.glob(os.path.join(self.K8S, "*.yaml"))):
            for doc in load_yaml_documents(path):
                self.assertIn("apiVersion", doc, path)
                self.objects[doc["kind"]] = doc

    def test_manifests_parse_and_cover_the_deployment(self):
        self.assertEqual(sorted(self.objects), ["ConfigMap", "Deployment", "Secret", "Service"])

    def test_configmap_ini_passes_check(self):
        # Host names are resolved at load time: the cluster's backend service
        # name stands for a reachable address here.
        text = for_this_host(self.objects["ConfigMap"]["data"]["smtp-tls-proxy.ini"])
        path = os.path.join(self.tmp, "k8s.ini")
        with open(path, "w") as f:
            f.write(text)
        out = subprocess.run([BIN, "--check", "-c", path], capture_output=True, timeout=20)
        self.assertEqual(out.returncode, 0, (out.stderr + out.stdout).decode())

    def test_pod_runs_unprivileged_and_ports_line_up(self):
        spec = self.objects["Deployment"]["spec"]["template"]["spec"]
        self.assertTrue(spec["securityContext"]["runAsNonRoot"])
        self.assertNotEqual(spec["securityContext"]["runAsUser"], 0)
        (container,) = spec["containers"]
        self.assertFalse(container["securityContext"]["allowPrivilegeEscalation"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        ini = self.objects["ConfigMap"]["data"]["smtp-tls-proxy.ini"]
        for port in ports.values():
            self.assertIn("0.0.0.0:%d" % port, ini)
        service = {p["port"]: p["targetPort"] for p in self.objects["Service"]["spec"]["ports"]}
        self.assertEqual(service, {25: "smtp", 587: "submission", 465: "smtps"})
        self.assertTrue(set(service.values()) <= set(ports))

    def test_probes_ask_healthz_and_readyz_on_the_metrics_port(self):
        (container,) = self.objects["Deployment"]["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        ini = self.objects["ConfigMap"]["data"]["smtp-tls-proxy.ini"]
        metrics = re.search(r"^metrics = (\S+):(\d+)$", ini, re.M)
        self.assertIsNotNone(metrics, "no metrics = in the ConfigMap")
        # reachable by the kubelet: not loopback
        self.assertEqual(metrics.group(1), "0.0.0.0")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = container[probe]["httpGet"]
            self.assertEqual(get["path"], path)
            port = ports.get(get["port"], get["port"])
            self.assertEqual(port, int(metrics.group(2)), probe)
        # the metrics endpoint has no authentication: never published
        service = {p["targetPort"] for p in self.objects["Service"]["spec"]["ports"]}
        self.assertNotIn("metrics", service)
        self.assertNotIn(int(metrics.group(2)), service)

    def test_probe_paths_answer_on_the_configmap_metrics_port(self):
        # The probes' paths and status codes, asked of the real proxy run with
        # the ConfigMap's own configuration (ports moved to free loopback ones).
        text = for_this_host(self.objects["ConfigMap"]["data"]["smtp-tls-proxy.ini"])
        text = re.sub(r"0\.0\.0\.0:(\d+)", lambda m: "127.0.0.1:%d" % free_port(), text)
        metrics_port = int(re.search(r"^metrics = 127\.0\.0\.1:(\d+)$", text, re.M).group(1))
        path = os.path.join(self.tmp, "k8s-run.ini")
        with open(path, "w") as f:
            f.write(text)
        with Process([BIN, "-c", path], os.path.join(self.tmp, "proxy.log")) as proxy:
            wait_port(metrics_port)
            for probe in ("/healthz", "/readyz"):
                status = http_status(metrics_port, probe)
                self.assertEqual(status, 200, "%s: %s" % (probe, proxy.log()))
            self.assertEqual(proxy.stop(), 0, proxy.log())

    def test_secret_is_a_template(self):
        for value in self.objects["Secret"]["stringData"].values():
            self.assertIn("REPLACE", value)
            self.assertNotIn("PRIVATE KEY-----", value)


class Compose(unittest.TestCase):
    """deploy/compose.yaml: the proxy image in front of a plaintext Postfix.
    (Running it needs the images: test_container.py builds and runs them.)"""
    COMPOSE = os.path.join(DEPLOY, "compose.yaml")

    def setUp(self):
        (self.doc,) = load_yaml_documents(self.COMPOSE)
        self.services = self.doc["services"]

    def test_services_and_order(self):
        self.assertEqual(sorted(self.services), ["legacy-mta", "proxy"])
        proxy = self.services["proxy"]
        self.assertEqual(proxy["image"], "localhost/smtp-tls-proxy:latest")
        self.assertIn("legacy-mta", proxy["depends_on"])
        # only the proxy is published; the legacy MTA stays on the compose network
        self.assertNotIn("ports", self.services["legacy-mta"])
        build = self.services["legacy-mta"]["build"]
        self.assertTrue(os.path.isfile(os.path.join(DEPLOY, build["context"], "Containerfile")))

    def mounted_ini(self):
        for volume in self.services["proxy"]["volumes"]:
            src, dst = volume.split(":")[:2]
            if dst == "/etc/smtp-tls-proxy/smtp-tls-proxy.ini":
                return os.path.normpath(os.path.join(DEPLOY, src))
        self.fail("no configuration mounted into the proxy")

    def test_published_ports_are_the_configured_listeners(self):
        with open(self.mounted_ini()) as f:
            ini = f.read()
        listens = {int(p) for p in re.findall(r"^listen = 0\.0\.0\.0:(\d+)$", ini, re.M)}
        metrics = int(re.search(r"^metrics = 0\.0\.0\.0:(\d+)$", ini, re.M).group(1))
        published = {}
        for spec in self.services["proxy"]["ports"]:
            parts = str(spec).split(":")
            published[int(parts[-1])] = parts[:-1]
        self.assertEqual(set(published), listens | {metrics})
        self.assertEqual(published[metrics][0], "127.0.0.1", "metrics published beyond loopback")
        self.assertEqual({p for p in published if p != metrics}, listens)
        backends = set(re.findall(r"^backend = (\S+)$", ini, re.M))
        self.assertEqual(backends, {"legacy-mta:25"})

    def postconf_edits(self):
        """The NAME=VALUE arguments of the Containerfile's `postconf -e`."""
        path = os.path.join(DEPLOY, self.services["legacy-mta"]["build"]["context"], "Containerfile")
        with open(path) as f:
            text = re.sub(r"\\\n", " ", f.read())  # continuation lines joined
        run = re.search(r"postconf -e (.*?)(?:&&|$)", text, re.M)
        self.assertIsNotNone(run, "no postconf -e in %s" % path)
        return shlex.split(run.group(1))

    def test_postfix_has_no_tls_and_no_open_relay(self):
        edits = self.postconf_edits()
        for setting in ("smtpd_tls_security_level=none", "smtp_tls_security_level=none",
                        "mynetworks_style=host",
                        "smtpd_relay_restrictions=reject_unauth_destination"):
            self.assertIn(setting, edits)
        self.assertTrue(any(e.startswith("mydestination=") for e in edits))

    @unittest.skipUnless(shutil.which("postconf") and os.path.exists(DEBIAN_MAIN_CF),
                         "needs Postfix's postconf and main.cf.debian")
    def test_postfix_settings_as_postconf_reads_them(self):
        # The image's main.cf: Debian's (compatibility_level 3.6, whose
        # smtpd_relay_restrictions starts with permit_mynetworks) with the
        # Containerfile's edits. With mynetworks_style = subnet the proxy,
        # on the same network, relayed anything anywhere.
        tmp = tmpdir()
        self.addCleanup(shutil.rmtree, tmp, True)
        shutil.copy(DEBIAN_MAIN_CF, os.path.join(tmp, "main.cf"))
        subprocess.run(["postconf", "-c", tmp, "-e"] + self.postconf_edits(), check=True,
                       capture_output=True, timeout=30)
        out = subprocess.run(["postconf", "-c", tmp, "-x", "-h", "mynetworks_style",
                              "smtpd_relay_restrictions", "mydestination"],
                             capture_output=True, timeout=30)
        style, relay, dest = out.stdout.decode().splitlines()
        self.assertEqual(style, "host")
        self.assertNotIn("permit_mynetworks", relay)
        self.assertEqual(relay.replace(",", " ").split(), ["reject_unauth_destination"])
        self.assertIn("example.test", dest.replace(",", " ").split())


class ReadmeLogEvents(unittest.TestCase):
    """The README's log event table calls field names a stable interface:
    every event the binary logs is in it."""

    def test_every_logged_event_is_documented(self):
        events = set()
        for path in glob.glob(os.path.join(ROOT, "proxy", "*.c")):
            with open(path) as f:
                text = f.read()
            events |= set(re.findall(r'stp_log\(STP_LOG_[A-Z]+,\s*"([a-z_]+)[ "]', text))
        self.assertIn("session", events)
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        table = readme[readme.index("| event | level |"):]
        table = table[:table.index("\n\n")]
        documented = set(re.findall(r"^\| `([a-z_]+)`(?:, `([a-z_]+)`)?", table, re.M))
        documented = {e for pair in documented for e in pair if e}
        self.assertEqual(sorted(events - documented), [])


class SystemdUnit(unittest.TestCase):
    UNIT = os.path.join(DEPLOY, "systemd", "smtp-tls-proxy.service")

    def setUp(self):
        self.tmp = tmpdir()
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def verify(self, text):
        path = os.path.join(self.tmp, "smtp-tls-proxy.service")
        with open(path, "w") as f:
            f.write(text)
        return subprocess.run(["systemd-analyze", "verify", path], capture_output=True, timeout=60)

    def unit_text(self):
        with open(self.UNIT) as f:
            text = f.read()
        # verify checks that ExecStart's binary exists: point it at the build.
        return text.replace("/usr/local/bin/smtp-tls-proxy", BIN)

    def test_unit_verifies(self):
        out = self.verify(self.unit_text())
        self.assertEqual(out.returncode, 0, (out.stderr + out.stdout).decode())
        self.assertEqual(out.stderr.decode().strip(), "")

    def test_verify_catches_a_broken_unit(self):
        out = self.verify(self.unit_text().replace("ProtectSystem=strict", "ProtectSystem=bogus")
                          .replace("Type=exec", "Type=nonsense"))
        err = (out.stderr + out.stdout).decode()
        self.assertIn("service type", err)
        self.assertIn("protect system", err)

    def test_readme_installs_what_the_unit_names(self):
        # the binary, the INI and the Documentation= file: each put in place
        # by an `install` line of the README's systemd steps
        with open(self.UNIT) as f:
            unit = f.read()
        paths = set(re.findall(r"^(?:ExecStart|ExecStartPre)=(/\S+)", unit, re.M))
        paths |= set(re.findall(r"^ExecStart=\S+ -c (/\S+)", unit, re.M))
        paths |= set(re.findall(r"^Documentation=file://(/\S+)", unit, re.M))
        self.assertEqual(len(paths), 3, paths)
        with open(os.path.join(ROOT, "README.md")) as f:
            readme = f.read()
        for path in sorted(paths):
            self.assertTrue(re.search(r"(?m)^install .* %s(\s|$)" % re.escape(path), readme),
                            "no README step installs %s" % path)

    def test_unit_is_hardened(self):
        with open(self.UNIT) as f:
            keys = dict(line.split("=", 1) for line in f.read().splitlines()
                        if "=" in line and not line.startswith("#"))
        for key, value in [("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
                           ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
                           ("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                           ("ProtectHome", "yes"), ("PrivateTmp", "yes"), ("PrivateDevices", "yes"),
                           ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
                           ("SystemCallFilter", "@system-service"), ("MemoryDenyWriteExecute", "yes"),
                           ("LockPersonality", "yes"), ("KillSignal", "SIGTERM"),
                           ("ExecReload", "/bin/kill -HUP $MAINPID")]:
            self.assertEqual(keys.get(key), value, key)
        self.assertTrue(keys.get("DynamicUser") == "yes" or keys.get("User"))

    def test_keys_need_a_group_not_world_read(self):
        # DynamicUser cannot read a root-only key; the unit must offer a way
        # other than chmod 644 on a private key.
        with open(self.UNIT) as f:
            text = f.read()
        keys = dict(line.split("=", 1) for line in text.splitlines()
                    if "=" in line and not line.startswith("#"))
        group = keys.get("SupplementaryGroups")
        self.assertEqual(group, "smtp-tls-proxy-keys")
        self.assertIn("chown root:%s /etc/smtp-tls-proxy/*.key" % group, text)
        self.assertIn("chmod 0640 /etc/smtp-tls-proxy/*.key", text)
        self.assertNotRegex(text, r"chmod\s+(0?6[4-7][4-7]|[ao]\+r)")


class Haproxy(unittest.TestCase):
    CFG = os.path.join(DEPLOY, "haproxy", "haproxy.cfg")

    def test_config_is_valid(self):
        out = subprocess.run(["haproxy", "-c", "-f", self.CFG], capture_output=True, timeout=30)
        self.assertEqual(out.returncode, 0, (out.stderr + out.stdout).decode())

    def test_checks_are_not_every_2_seconds(self):
        # each check is a whole proxied session (and a backend connection)
        with open(self.CFG) as f:
            lines = [line.split() for line in f if not line.strip().startswith("#")]
        units = {"ms": 0.001, "s": 1, "m": 60, "": 0.001}
        inters = []
        for words in lines:
            if words and words[0] in ("default-server", "server") and "inter" in words:
                m = re.fullmatch(r"(\d+)(ms|s|m|)", words[words.index("inter") + 1])
                inters.append(int(m.group(1)) * units[m.group(2)])
        self.assertTrue(inters, "no 'inter': haproxy checks every 2 s")
        self.assertGreaterEqual(min(inters), 10)

    def test_every_server_sends_proxy_v2(self):
        with open(self.CFG) as f:
            servers = [line.split() for line in f if line.strip().startswith("server ")]
        self.assertGreaterEqual(len(servers), 2)
        for words in servers:
            self.assertIn("send-proxy-v2", words)
            self.assertIn("check-send-proxy", words)
