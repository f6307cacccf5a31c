"""The same wall inside an image as on the host: each property shown in a real sandbox
on the Debian image (namespaces, seccomp, capabilities, no-new-privs, cgroup, `none`
egress, the TIOCSTI filter, honeytokens, the record), and what a crash leaves: an owner
killed with SIGKILL leaves no mount, overlay or upper behind after `sandbox gc`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from sandbox import Sandbox, Store
from tests.helpers import gone, sandbox_cli, wait_for

from .conftest import Images

STATUS = "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status"


def _status(sb: Sandbox) -> dict[str, str]:
    out = sb.exec(["sh", "-c", STATUS]).stdout
    return dict(line.split(":\t") for line in out.strip().splitlines())


def test_capabilities_seccomp_no_new_privs_as_on_the_host(images: Images,
                                                           workspace: Path) -> None:
    with Sandbox(workdir=workspace) as host, Sandbox(image="deb") as img:
        h, i = _status(host), _status(img)
        assert i["CapEff"] == i["CapBnd"] == "0000000000000000"
        assert i["NoNewPrivs"] == "1" and i["Seccomp"] == "2"
        assert (h["CapEff"], h["NoNewPrivs"], h["Seccomp"]) == \
            (i["CapEff"], i["NoNewPrivs"], i["Seccomp"])
        assert img.run("id -u").output.strip() != "0" and host.run("id -u").output.strip() != "0"


def test_no_namespaces_from_inside(images: Images) -> None:
    """firejail's --restrict-namespaces filter is not used in an image (see jail.py); the
    kernel refuses a user namespace inside a chroot, and every other kind needs a
    capability the jail does not have."""
    with Sandbox(image="deb") as sb:
        for flag in ("-U", "-n", "-m", "-p -f", "-i", "-u", "-C"):
            r = sb.exec(f"unshare {flag} true")
            assert r.returncode != 0, (flag, r.stdout, r.stderr)
        code = textwrap.dedent("""\
            import ctypes, os
            libc = ctypes.CDLL(None, use_errno=True)
            for flag in (0x10000000, 0x40000000, 0x00020000):  # USER, NET, NS
                print(libc.unshare(flag), ctypes.get_errno())
            """)
        r = sb.exec(["python3", "-c", code])
        assert [line.split()[0] for line in r.stdout.splitlines()] == ["-1"] * 3, r.stdout
        assert r.stdout.split()[1] == "1"  # EPERM for the user namespace: the chroot rule


def test_no_network_pid_namespace_and_host_invisible(images: Images, state_dir: Path) -> None:
    with Sandbox(image="deb") as sb:
        r = sb.exec(["python3", "-c", "import socket; print(sorted(n for _, n in "
                     "socket.if_nameindex()))"])
        assert r.stdout.strip() in ("['lo']", "[]"), r.stdout
        pids = sb.exec("ls /proc | grep -E '^[0-9]+$' | wc -l").stdout.strip()
        assert int(pids) < 10  # its own pid namespace
        # The host's files are not there at all: not hidden, absent.
        for path in (str(state_dir), "/work", "/etc/firejail", "/srv/sandbox-tests",
                     sys.executable):
            assert sb.exec(["test", "-e", path]).returncode == 1, path
        assert sb.exec("cat /etc/shadow").returncode != 0  # the image's: root-only


def test_cgroup_holds_the_image_sandbox(images: Images) -> None:
    with Sandbox(image="deb", limits={"pids": 64}) as sb:
        inside = sb.exec("cat /proc/self/cgroup").stdout
        assert "sbx" in inside or sb.id in inside, inside
        r = sb.exec("for i in $(seq 200); do sleep 5 & done 2>&1 | tail -1; wait", timeout=60)
        assert "fork" in (r.stdout + r.stderr).lower() or r.returncode != 0


def test_tiocsti_is_refused_in_the_image(images: Images) -> None:
    code = ("import fcntl, os, termios; fd = os.open('/dev/tty', os.O_RDWR)\n"
            "try:\n fcntl.ioctl(fd, termios.TIOCSTI, b'x'); print('pushed')\n"
            "except OSError as e: print('refused', e.errno)")
    with Sandbox(image="deb") as sb:
        r = sb.run(f"python3 -c \"{code}\"")
        assert "refused 1" in r.output, r.output


def test_honeytokens_planted_and_watched_in_the_image(images: Images, test_dir: Path) -> None:
    profile = test_dir / "h.toml"
    profile.write_text('extends = "default"\n[honeytokens]\naws_credentials = true\n')
    with Sandbox(profile=str(profile), image="deb") as sb:
        r = sb.run("cat ~/.aws/credentials")
        assert "aws_access_key_id" in r.output, r.output
        sid = sb.id
    assert wait_for(lambda: any(e["kind"].startswith("honeytoken")
                                for e in Store().events(sid)), timeout=10)


def test_setuid_and_device_nodes_of_the_image_are_inert(images: Images,
                                                         state_dir: Path) -> None:
    """The overlay is nodev,nosuid and the jail no-new-privs: a setuid-root python and a
    disk's device node, put in the image (here: into a kept upper, as a layer would), give
    no root and no device."""
    with Sandbox(image="deb", keep=True) as sb:
        sid = sb.id
    upper = state_dir / "uppers" / sid / "upper"
    (upper / "usr/local/bin").mkdir(parents=True, exist_ok=True)
    python = images_rootfs("deb") / "usr/bin/python3.11"
    target = upper / "usr/local/bin/rootpy"
    target.write_bytes(python.read_bytes())
    os.chown(target, 0, 0)
    os.chmod(target, 0o4755)
    os.mknod(upper / "usr/local/bin/disk", 0o60666, os.stat("/dev/vda").st_rdev
             if os.path.exists("/dev/vda") else os.makedev(8, 0))
    name = f"hostile-{sid}"
    r = sandbox_cli("image", "commit", sid, name)
    assert r.returncode == 0, r.stderr
    try:
        with Sandbox(image=name) as sb:
            r = sb.exec(["/usr/local/bin/rootpy", "-c", "import os; print(os.geteuid())"])
            assert r.returncode == 0 and r.stdout.strip() != "0", (r.stdout, r.stderr)
            assert sb.exec(["stat", "-c", "%a", "/usr/local/bin/rootpy"]).stdout.strip() \
                == "4755"  # the bit is there; the kernel ignores it
            r = sb.exec("head -c 16 /usr/local/bin/disk | wc -c")
            assert r.stdout.strip() == "0" and "denied" in r.stderr.lower(), r.stderr
    finally:
        sandbox_cli("image", "rm", name)


def images_rootfs(name: str) -> Path:
    from sandbox.jail.images import ImageStore

    return ImageStore().get(name).rootfs


def test_owner_killed_leaves_nothing_after_gc(images: Images, state_dir: Path) -> None:
    """SIGKILL the owning process: the overlay died with the jail's mount namespace; gc
    removes the upper (and its quota mount) and the mount point."""
    script = textwrap.dedent("""\
        import sys, time
        from sandbox import Sandbox
        sb = Sandbox(image="deb", limits={"disk_mib": 64}).start()
        print(sb.id, sb._session.jail_pid, flush=True)
        time.sleep(120)
        """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            text=True, env=os.environ.copy())
    assert proc.stdout is not None
    sid, jail_pid = proc.stdout.readline().split()
    upper = state_dir / "uppers" / sid
    mountpoint = Path("/run/sandbox-root") / sid
    assert upper.is_dir() and mountpoint.is_dir() and os.path.ismount(upper)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    r = sandbox_cli("gc")
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: gone(int(jail_pid)), timeout=10)
    assert not upper.exists() and not mountpoint.exists()
    mounts = Path("/proc/self/mountinfo").read_text()
    assert sid not in mounts
    assert Store().get_session(sid)["state"] == "failed"
