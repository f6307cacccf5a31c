import subprocess, time, socket
from sandbox.events import ListEmit
from sandbox.profile import NetworkSection
from sandbox import network
from tests.network.conftest import *

def test_smoke(fake_internet):
    emit = ListEmit()
    sec = NetworkSection(mode="allowlist", allow=["good.test:443", "ssh.test:443,22"], upstream_dns=DNS_IP)
    t0 = time.monotonic()
    h = network.setup("smoke12345", sec, emit)
    print("setup", time.monotonic() - t0)
    try:
        print(h.resources, network.leftovers())
        r = subprocess.run(["ip", "netns", "exec", h.netns, "curl", "-sS", "--noproxy", "*", "--max-time", "5", "--cacert", str(fake_internet.cert), "https://good.test/"], capture_output=True, text=True)
        print(r.returncode, r.stdout, r.stderr)
        r = subprocess.run(["ip", "netns", "exec", h.netns, "curl", "-sS", "--noproxy", "*", "--max-time", "5", "--cacert", str(fake_internet.cert), "https://bad.test/"], capture_output=True, text=True)
        print(r.returncode, r.stdout, r.stderr)
        time.sleep(0.3)
        for e in emit.events: print(e)
        print(h.counters())
    finally:
        t0 = time.monotonic()
        h.teardown()
        print("teardown", time.monotonic() - t0)
        print(network.leftovers())
