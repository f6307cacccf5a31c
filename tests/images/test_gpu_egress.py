"""GPUs and egress inside an image. A GPU grant (the fake NVML: no GPU here) shows the
granted device in the environment and binds the driver's user-space files read-only, as
nvidia-container-cli does; no grant binds nothing. Allowlist egress in an image: the
session's resolver and gateway decide, as on the host (the fake internet on TEST-NET)."""

from __future__ import annotations

import textwrap
from pathlib import Path

from sandbox import Sandbox, Store
from sandbox.gpu import FakeNvml
from sandbox.gpu.driver import parse_ldconfig
from tests.network.conftest import DNS_IP, GOOD_IP, FakeInternet

from .conftest import Images


def test_parse_ldconfig_picks_the_driver_libraries() -> None:
    text = textwrap.dedent("""\
        1234 libs found in cache `/etc/ld.so.cache'
        \tlibcuda.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libcuda.so.1
        \tlibcuda.so.1 (libc6) => /usr/lib/i386-linux-gnu/libcuda.so.1
        \tlibnvidia-ml.so.1 (libc6,x86-64) => /usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1
        \tlibcudart.so.12 (libc6,x86-64) => /usr/local/cuda/lib64/libcudart.so.12
        \tlibc.so.6 (libc6,x86-64) => /lib/x86_64-linux-gnu/libc.so.6
        """)
    assert parse_ldconfig(text) == ["/usr/lib/x86_64-linux-gnu/libcuda.so.1",
                                    "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.1"]


def test_gpu_grant_in_an_image_binds_the_driver_read_only(images: Images,
                                                          test_dir: Path) -> None:
    driver = test_dir / "driver"
    driver.mkdir()
    lib = driver / "libcuda.so.1"
    lib.write_bytes(b"\x7fELF fake driver library")
    smi = driver / "nvidia-smi"
    smi.write_text("#!/bin/sh\necho 'NVIDIA-SMI fake'\n")
    smi.chmod(0o755)
    fake = FakeNvml(devices=1)
    fake.driver_files = [str(lib), str(smi)]
    profile = test_dir / "gpu.toml"
    profile.write_text('extends = "default"\n[gpu]\ncount = 1\n')
    with Sandbox(profile=str(profile), image="deb", gpu_backend=fake) as sb:
        assert sb.exec(["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]).stdout.strip() == \
            fake.devices()[0].uuid
        assert sb.exec(["cat", str(lib)]).stdout == "\x7fELF fake driver library"
        assert sb.exec([str(smi)]).stdout == "NVIDIA-SMI fake\n"
        r = sb.exec(["sh", "-c", f"echo x > {lib}"])
        assert r.returncode != 0 and "Read-only" in r.stderr, r.stderr
    with Sandbox(image="deb", gpu_backend=fake) as sb:  # no [gpu]: nothing of the driver
        assert sb.exec(["test", "-e", str(lib)]).returncode == 1
        assert sb.exec(["sh", "-c", "echo $CUDA_VISIBLE_DEVICES"]).stdout.strip() == ""


ALLOW = f'''extends = "default"
[network]
mode = "allowlist"
allow = ["good.test:443"]
upstream_dns = "{DNS_IP}"
[image]
ref = "deb"
'''

FETCH = textwrap.dedent("""\
    import socket, ssl, sys
    ctx = ssl.create_default_context(); ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    for host in sys.argv[1:]:
        try:
            with socket.create_connection((host, 443), timeout=5) as raw:
                with ctx.wrap_socket(raw, server_hostname=host) as s:
                    s.sendall(b"GET / HTTP/1.0\\r\\nHost: " + host.encode() + b"\\r\\n\\r\\n")
                    print(host, b"fake internet" in s.recv(4096))
        except OSError as e:
            print(host, "denied", type(e).__name__)
    """)


def test_allowlist_egress_in_an_image(images: Images, test_dir: Path,
                                      fake_internet: FakeInternet) -> None:
    profile = test_dir / "allow.toml"
    profile.write_text(ALLOW)
    with Sandbox(profile=str(profile)) as sb:
        assert "nameserver" in sb.exec(["cat", "/etc/resolv.conf"]).stdout
        sb.write_file("fetch.py", FETCH)
        r = sb.exec(["python3", "fetch.py", "good.test", "bad.test"], timeout=60)
        lines = dict(line.split(" ", 1) for line in r.stdout.splitlines())
        assert lines["good.test"] == "True", (r.stdout, r.stderr)
        assert lines["bad.test"].startswith("denied"), r.stdout
        sid = sb.id
    # The record: the allowed connection as a net.attempt, the other name refused at the
    # session's resolver (it never got an address to dial).
    store = Store()
    attempts = [e["detail"] for e in store.events(sid, kinds=("net.attempt",))]
    assert any(a.get("dst_ip") == GOOD_IP for a in attempts), attempts
    queries = [e["detail"] for e in store.events(sid, kinds=("dns.query",))]
    assert any(q["name"].rstrip(".") == "bad.test" and q["verdict"] != "allow"
               for q in queries), queries
