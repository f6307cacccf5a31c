"""GpuMonitor: host PIDs from the fake NVML, real process trees, real kills."""

from __future__ import annotations

import subprocess

from sandbox.gpu import FakeNvml, GpuMonitor, SessionGpu
from sandbox.jail.profile import GpuSection
from tests.gpu.conftest import Sessions, Tree
from tests.helpers import gone, wait_for

MIB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def monitor(fake: FakeNvml, sessions: Sessions, **kw: object) -> GpuMonitor:
    return GpuMonitor(fake, 0.05, sessions.emit_for, sessions.kill, sessions,
                      emit_host=sessions.host, **kw)  # type: ignore[arg-type]


def test_children_and_grandchildren_map_to_their_session(tree: Tree, other_tree: Tree,
                                                         sessions: Sessions) -> None:
    """NVML host PIDs of a child and a grandchild are attributed to the session whose
    root is their ancestor, not to another session and not as orphans."""
    fake = FakeNvml(devices=2)
    fake.set_process(0, tree.child, used_memory=100 * MIB, sm_util=10)
    fake.set_process(0, tree.grandchild, used_memory=200 * MIB, sm_util=20)
    sessions.entries = {
        "s1": SessionGpu(tree.root, GpuSection(count=1), (0,)),
        "s2": (other_tree.root, GpuSection(count=1), (1,)),  # the plain-tuple form
    }
    events = monitor(fake, sessions).poll_once()
    assert [e["kind"] for e in events] == ["gpu.sample"]
    usage = sessions.emits["s1"].of_kind("gpu.sample")[0]["detail"]
    assert usage["pids"] == sorted([tree.child, tree.grandchild])
    assert usage["mem_bytes"] == 300 * MIB and usage["util"] == 30 and usage["gpu"] == "0"
    assert sessions.host.events == [] and sessions.kills == []
    assert "s2" not in sessions.emits or sessions.emits["s2"].events == []


def test_usage_is_kept_for_ls_and_show(tree: Tree, sessions: Sessions) -> None:
    """`usage()` gives the last poll's memory and utilisation per session."""
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=64 * MIB, sm_util=55)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(), (0,))}
    mon = monitor(fake, sessions)
    mon.poll_once()
    u = mon.usage("s1")
    assert u is not None and u.mem_bytes == 64 * MIB and u.util == 55
    fake.clear_processes()
    mon.poll_once()
    u = mon.usage("s1")
    assert u is not None and u.mem_bytes == 0 and u.util == 0


def test_memory_breach_kills_the_session_at_the_first_poll(tree: Tree,
                                                           sessions: Sessions) -> None:
    """Memory over quota -> gpu.breach (alert, kill) and kill_session at that poll; the
    callback kills the real tree, and the next poll sees nothing more to do."""
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=600 * MIB, sm_util=5)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(memory_limit_mib=512), (0,))}
    sessions.kill_action["s1"] = tree
    mon = monitor(fake, sessions)
    events = mon.poll_once()
    breach = [e for e in events if e["kind"] == "gpu.breach"]
    assert len(breach) == 1
    assert breach[0]["severity"] == "alert" and breach[0]["action"] == "kill"
    assert breach[0]["detail"]["limit"] == "memory"
    assert breach[0]["detail"]["mem_bytes"] == 600 * MIB
    assert breach[0]["detail"]["pid"] == tree.grandchild
    assert sessions.emits["s1"].of_kind("gpu.breach") == [
        {k: breach[0][k] for k in ("kind", "detail", "severity", "action")} | {"rule": None}]
    assert [s for s, _ in sessions.kills] == ["s1"] and "memory" in sessions.kills[0][1]
    assert wait_for(lambda: gone(tree.grandchild) and gone(tree.root), 5)
    # NVML may still list a dead PID for a moment: it is neither re-killed nor an orphan.
    assert mon.poll_once() == [] and len(sessions.kills) == 1


def test_memory_breach_with_flag_records_and_does_not_kill(tree: Tree,
                                                           sessions: Sessions) -> None:
    """on_breach = "flag": the breach is recorded once per episode, nothing is killed."""
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=600 * MIB)
    section = GpuSection(memory_limit_mib=512, on_breach="flag")
    sessions.entries = {"s1": SessionGpu(tree.root, section, (0,))}
    mon = monitor(fake, sessions)
    first = [e for e in mon.poll_once() if e["kind"] == "gpu.breach"]
    assert [(e["severity"], e["action"]) for e in first] == [("alert", "flag")]
    assert [e for e in mon.poll_once() if e["kind"] == "gpu.breach"] == []  # same episode
    fake.set_process(0, tree.grandchild, used_memory=100 * MIB)
    mon.poll_once()
    fake.set_process(0, tree.grandchild, used_memory=700 * MIB)
    assert len([e for e in mon.poll_once() if e["kind"] == "gpu.breach"]) == 1  # a new one
    assert sessions.kills == [] and not gone(tree.grandchild)


def test_utilisation_breach_needs_the_whole_window(tree: Tree, sessions: Sessions) -> None:
    """Utilisation over quota is a breach only once it has held for utilization_window_s;
    a dip below the quota restarts the window."""
    clock = Clock()
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=10 * MIB, sm_util=99)
    section = GpuSection(utilization_limit_percent=90, utilization_window_s=10)
    sessions.entries = {"s1": SessionGpu(tree.root, section, (0,))}
    mon = monitor(fake, sessions, clock=clock)

    def breaches() -> list[dict[str, object]]:
        return [e for e in mon.poll_once() if e["kind"] == "gpu.breach"]

    assert breaches() == []
    clock.t += 6
    assert breaches() == []
    fake.set_process(0, tree.grandchild, used_memory=10 * MIB, sm_util=50)  # dip
    clock.t += 1
    assert breaches() == []
    fake.set_process(0, tree.grandchild, used_memory=10 * MIB, sm_util=99)
    clock.t += 1
    assert breaches() == []
    clock.t += 9
    assert breaches() == []
    clock.t += 1
    got = breaches()
    assert len(got) == 1 and got[0]["detail"]["limit"] == "utilization"
    assert got[0]["detail"]["window_s"] >= 10
    assert [s for s, _ in sessions.kills] == ["s1"]


def test_use_without_a_grant_is_unauthorized_and_killed(tree: Tree, sessions: Sessions) -> None:
    """A session with no [gpu] whose grandchild shows up on a GPU -> gpu.unauthorized,
    critical, and the default action kill."""
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=1 * MIB, sm_util=100)
    sessions.entries = {"s1": SessionGpu(tree.root, None, ())}
    sessions.kill_action["s1"] = tree
    events = monitor(fake, sessions).poll_once()
    bad = [e for e in events if e["kind"] == "gpu.unauthorized"]
    assert len(bad) == 1
    assert (bad[0]["severity"], bad[0]["action"]) == ("critical", "kill")
    assert bad[0]["detail"]["reason"] == "session has no GPU grant"
    assert bad[0]["detail"]["pid"] == tree.grandchild
    assert sessions.kills and sessions.kills[0][0] == "s1"
    assert wait_for(lambda: gone(tree.grandchild), 5)


def test_unauthorized_action_flag_and_ungranted_device(tree: Tree, sessions: Sessions) -> None:
    """With on_unauthorized="flag" nothing is killed; using a GPU outside the grant is
    unauthorized too, while the granted one is not."""
    fake = FakeNvml(devices=2)
    fake.set_process(0, tree.child, used_memory=1 * MIB)
    fake.set_process(1, tree.grandchild, used_memory=1 * MIB)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(devices=["0"]), (0,))}
    events = monitor(fake, sessions, on_unauthorized="flag").poll_once()
    bad = [e for e in events if e["kind"] == "gpu.unauthorized"]
    assert [(e["detail"]["gpu"], e["severity"], e["action"]) for e in bad] == [
        ("1", "critical", "flag")]
    assert "GPU 1 is not granted" in bad[0]["detail"]["reason"]
    assert sessions.kills == []


def test_gpu_process_of_no_session_is_an_orphan(tree: Tree, other_tree: Tree,
                                                sessions: Sessions) -> None:
    """A live GPU process outside every session -> gpu.orphan (warning) on the host emit,
    once while it stays; a dead PID NVML still lists is not reported."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    fake = FakeNvml()
    fake.set_process(0, other_tree.grandchild, used_memory=5 * MIB, sm_util=40)
    fake.set_process(0, dead.pid, used_memory=5 * MIB)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(), (0,))}
    mon = monitor(fake, sessions)
    events = mon.poll_once()
    assert [(e["kind"], e["severity"], e["session"]) for e in events] == [
        ("gpu.orphan", "warning", None)]
    assert events[0]["detail"]["pid"] == other_tree.grandchild
    assert "sleep" in events[0]["detail"]["cmdline"]
    assert sessions.host.of_kind("gpu.orphan")[0]["detail"]["mem_bytes"] == 5 * MIB
    assert mon.poll_once() == []
    assert [o["pid"] for o in mon.orphans] == [other_tree.grandchild]


def test_a_session_that_ended_leaves_orphans_behind(tree: Tree, sessions: Sessions) -> None:
    """A process still on the GPU after its session is gone is reported as an orphan."""
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=5 * MIB)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(), (0,))}
    mon = monitor(fake, sessions)
    mon.poll_once()
    sessions.entries = {}
    events = mon.poll_once()
    assert [(e["kind"], e["severity"]) for e in events] == [("gpu.orphan", "alert")]
    assert events[0]["detail"]["was_session"] == "s1"  # it outlived its session


def test_samples_are_rate_limited_unless_values_jump(tree: Tree, sessions: Sessions) -> None:
    """gpu.sample at most every sample_every_s per session, unless memory or utilisation
    changes a lot; a final sample records the drop to zero."""
    clock = Clock()
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=1000 * MIB, sm_util=30)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(), (0,))}
    mon = monitor(fake, sessions, clock=clock, sample_every_s=5)

    def samples() -> int:
        return len([e for e in mon.poll_once() if e["kind"] == "gpu.sample"])

    assert samples() == 1
    clock.t += 1
    assert samples() == 0
    fake.set_process(0, tree.grandchild, used_memory=1010 * MIB, sm_util=35)
    clock.t += 1
    assert samples() == 0  # small change
    fake.set_process(0, tree.grandchild, used_memory=3000 * MIB, sm_util=35)
    clock.t += 1
    assert samples() == 1  # memory tripled
    clock.t += 5
    assert samples() == 1  # the period passed
    fake.clear_processes()
    clock.t += 1
    assert samples() == 1  # dropped to zero
    clock.t += 10
    assert samples() == 0  # idle, already said so


def test_thread_kills_within_the_poll_loop(tree: Tree, sessions: Sessions) -> None:
    """Started as a thread, the monitor finds a breach and kills without poll_once."""
    fake = FakeNvml()
    section = GpuSection(memory_limit_mib=1, poll_interval_s=0.05)
    sessions.entries = {"s1": SessionGpu(tree.root, section, (0,))}
    sessions.kill_action["s1"] = tree
    with GpuMonitor(fake, 1.0, sessions.emit_for, sessions.kill, sessions):
        fake.set_process(0, tree.grandchild, used_memory=2 * MIB)
        assert wait_for(lambda: gone(tree.grandchild), 10)
    assert sessions.kills and sessions.kills[0][0] == "s1"


def test_kill_failure_is_recorded_and_monitor_survives(tree: Tree, sessions: Sessions) -> None:
    """A kill callback that raises becomes a session.warning; the poll still returns."""
    fake = FakeNvml()
    fake.set_process(0, tree.grandchild, used_memory=2 * MIB)
    sessions.entries = {"s1": SessionGpu(tree.root, GpuSection(memory_limit_mib=1), (0,))}

    def broken(sid: str, reason: str) -> None:
        raise RuntimeError("jail already gone")

    mon = GpuMonitor(fake, 1.0, sessions.emit_for, broken, sessions)
    events = mon.poll_once()
    warn = [e for e in events if e["kind"] == "session.warning"]
    assert warn and "jail already gone" in warn[0]["detail"]["reason"]
