"""Process identities: unique per process and after fork, host from the configuration, parsing of
owners, and the same-machine shortcut that never judges a process of another machine."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess

from t0dqm import config
from t0dqm.identity import gone_from_this_machine, holder_process, locator, process_identity, worker_identity


def _child_identity(queue) -> None:
    queue.put(process_identity())


def test_identity_is_per_process_and_new_after_fork() -> None:
    mine = process_identity()
    assert mine == process_identity()
    host, pid, token = mine.split(":")
    assert int(pid) == os.getpid() and len(token) == 10 and token.isalpha()
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_child_identity, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(30)
    assert theirs != mine and theirs.split(":")[0] == host and theirs.split(":")[1] == str(child.pid)


def test_host_part_is_the_configured_host(tmp_path) -> None:
    settings = config.load(None, environ={"T0DQM_ROOT": str(tmp_path), "T0DQM_HOST": "p5-host:1"})
    config.reset(settings)
    try:
        ctx = mp.get_context("fork")  # a fresh process draws its identity with this configuration
        queue = ctx.Queue()
        child = ctx.Process(target=_child_identity, args=(queue,))
        child.start()
        assert queue.get(timeout=30).startswith("p5-host_1:")
        child.join(30)
    finally:
        config.reset(None)


def test_holder_process_parsing() -> None:
    assert holder_process(worker_identity()) == process_identity()
    assert holder_process("hostA:12:abcdefghij:1400:task-id:receive") == "hostA:12:abcdefghij"
    assert holder_process("hostA:12:abcdefghij") == "hostA:12:abcdefghij"
    for legacy in ("hostA:12:140234", "beat", "hostA", "", None, "hostA:x:abcdefghij", "hostA:12:abcdefghi"):
        assert holder_process(legacy) is None, legacy


def test_same_machine_shortcut() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        where = locator(child.pid)
        assert where and not gone_from_this_machine(where)
    finally:
        child.kill()
        child.wait()
    assert gone_from_this_machine(where)
    boot, ns, pid, start = where.split("/")
    assert not gone_from_this_machine(f"another-boot-id/{ns}/{pid}/{start}")  # another machine: unknown
    assert not gone_from_this_machine(f"{boot}/1/{pid}/{start}")  # another pid namespace: unknown
    assert not gone_from_this_machine(locator())  # this very process
    assert gone_from_this_machine(f"{boot}/{ns}/{os.getpid()}/1")  # pid reused by another process
    assert not gone_from_this_machine("") and not gone_from_this_machine("garbage")
