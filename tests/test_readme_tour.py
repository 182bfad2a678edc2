"""The README's Tour, run as written: every ``$`` command of its console blocks, in order, in one shell.

A reader types the commands into one terminal (``&`` puts ingest and the service in the background, ``%1``
names them), so the test does the same: one bash, the commands exactly as the README prints them, against
a mosquitto on 127.0.0.1:1883 (the one the README asks for, started from ``deploy/mosquitto.conf``), in an
empty folder, with the project's ``corridorhub`` on PATH.  The README's ports are fixed (1883, 8765), so
where it can (as root, as CI runs) the shell gets a network namespace of its own (``unshare --net``): two
runs of the tour on one machine, or anything else on those ports, cannot meet.

What is compared: each command ends with status 0, and every line the README shows for it that holds no
digit (headers, messages, file names: what does not change from run to run) appears in what it printed,
spaces collapsed.  Lines with digits (counts, times, keys) differ from run to run and are not compared.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@dataclass
class Command:
    text: str  # as the README prints it, continuation lines included
    shown: list[str] = field(default_factory=list)  # the output the README shows for it


def tour_commands(readme: str) -> list[Command]:
    section = readme.split("\n## Tour\n", 1)[1].split("\n## Layout\n", 1)[0]
    commands: list[Command] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            if line.startswith("$ "):
                commands.append(Command(line[2:]))
            elif line.startswith("    ") and commands and not commands[-1].shown:
                commands[-1].text += "\n" + line  # a continuation of the command
            elif commands:
                commands[-1].shown.append(line)
    return commands


def _stable(line: str) -> str | None:
    """A shown line worth comparing: no digit, no elision; spaces collapsed."""
    if not line.strip() or re.search(r"\d", line) or "..." in line:
        return None
    return " ".join(line.split())


class Shell:
    """One bash, fed commands on stdin, its output (both streams) collected as it comes."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.private_network = _can_unshare()
        command = ["bash", "--norc", "--noprofile"]
        if self.private_network:  # its own loopback: the README's fixed ports are ours alone
            command = [
                "unshare",
                "--net",
                "bash",
                "--norc",
                "--noprofile",
                "-c",
                "ip link set lo up && exec bash",
            ]
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.output = ""
        self._lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.output += line

    def text(self) -> str:
        with self._lock:
            return self.output

    def run(self, command: str, marker: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{command}\necho '{marker}' $?\n")
        self.proc.stdin.flush()

    def wait_for(self, pattern: str, since: int, timeout: float) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text()[since:])
            if found:
                return found
            time.sleep(0.2)
        return None

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, 15)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)


def _can_unshare() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    probe = subprocess.run(["unshare", "--net", "ip", "link", "set", "lo", "up"], capture_output=True)
    return probe.returncode == 0


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _broker_config(folder: Path) -> Path:
    """``deploy/mosquitto.conf`` with its queue in ``folder`` and its log on stderr."""
    conf = (ROOT / "deploy" / "mosquitto.conf").read_text(encoding="utf-8")
    conf = re.sub(r"(?m)^persistence_location .*$", f"persistence_location {folder}/", conf)
    conf = re.sub(r"(?m)^(log_dest|pid_file|user) .*$", "", conf)
    path = folder / "mosquitto.conf"
    path.write_text(conf + "\nlog_dest stderr\n", encoding="utf-8")
    return path


def start_broker(shell: Shell, folder: Path) -> None:
    """The broker the README assumes runs ("With a broker running"), in the shell's network."""
    if not shell.private_network:
        assert not _listening(8765), "port 8765, which the README's commands use, is taken"
        if _listening(1883):
            return  # a broker already runs where the README says (the Debian package's, say)
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    start = len(shell.text())
    # disowned: not a job of the shell, so that the README's `kill %1` names what it means; still in the
    # shell's process group, so that closing the shell stops it
    shell.run(f"{mosquitto} -c {_broker_config(folder)} 2>/dev/null & disown", "@@broker")
    check = "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", 1883), 1)'"
    shell.run(f"for i in $(seq 100); do {check} 2>/dev/null && break; sleep 0.1; done; {check}", "@@ready")
    ready = shell.wait_for(r"@@ready (\d+)", start, timeout=30)
    assert ready and ready.group(1) == "0", f"mosquitto did not start:\n{shell.text()[start:]}"


@pytest.mark.slow
def test_the_readme_tour_runs_as_written(tmp_path: Path) -> None:
    commands = tour_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert len(commands) >= 10 and any("publish" in c.text for c in commands)
    work = tmp_path / "tour"
    work.mkdir()
    (tmp_path / "mosquitto").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORRIDORHUB_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    shell = Shell(work, env)
    try:
        start_broker(shell, tmp_path / "mosquitto")
        for i, command in enumerate(commands):
            start = len(shell.text())
            marker = f"@@tour-{i}"
            shell.run(command.text, marker)
            done = shell.wait_for(rf"{marker} (\d+)", start, timeout=300)
            assert done, f"{command.text!r} did not finish:\n{shell.text()[start:][-3000:]}"
            assert done.group(1) == "0", f"{command.text!r} failed:\n{shell.text()[start:][-3000:]}"
            if command.text.startswith("corridorhub ingest") and command.text.endswith("&"):
                # as the README says: wait for it to subscribe before publishing anything
                assert shell.wait_for("subscribed to", start, timeout=60), shell.text()[start:]
            if command.text.startswith("corridorhub serve") and command.text.endswith("&"):
                assert shell.wait_for("Uvicorn running|Application startup complete", start, timeout=60)
            for line in filter(None, map(_stable, command.shown)):
                # output of background jobs (ingest's last lines after `kill`) may come a moment later
                seen = shell.wait_for(re.escape(line).replace(r"\ ", r"\s+"), start, timeout=30)
                got = shell.text()[start:][-3000:]
                assert seen, f"{command.text!r}: the README shows {line!r}; got:\n{got}"
    finally:
        shell.close()
