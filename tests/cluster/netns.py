"""Hosts of our own on one machine: network namespaces on a private bridge, each a "host" with its own
address, hostname and sshd, so that multi-host launches (horovodrun -H, mpirun --hostfile, a 2-node
SLURM) really cross a network interface between hosts.

Nothing outside the namespaces is ever contacted: the bridge lives in a namespace of its own, and the root
namespace gets no address and no route on the private subnet (from there, 10.213.14.x would go to the
default gateway). So every launcher, ssh and daemon runs INSIDE a host namespace (`run`, `prefix`).

By hand, as root (this project's machines and CI run as root):

    python tests/cluster/netns.py up /tmp/hvdw-hosts --hosts 2     # prints the hosts and how to use them
    python tests/cluster/netns.py run /tmp/hvdw-hosts hostA -- ssh hostB hostname
    python tests/cluster/netns.py down /tmp/hvdw-hosts             # stops sshd, deletes the namespaces,
                                                                   # restores /root/.ssh, checks `ip netns list`

Layout (the verified recipe of the project's stack notes):
  namespace <tag>-br: bridge br0 and one veth per host (no address: it only forwards);
  namespace <tag>-a, -b, ...: veth `hvd0` with 10.213.14.1/24, .2, ...; loopback; an sshd on hvd0 port 22.
  /etc/netns/<namespace>/hosts maps the host names; `ip netns exec` bind-mounts it over /etc/hosts inside
  (ip-netns(8)), so the machine's /etc/hosts is never edited. Every command runs under `unshare --uts`
  with the host's name as hostname: Horovod's Gloo resolves the hostname to pick its address (with one
  name everywhere it binds loopback and fails), and ranks.json records platform.node().
  /root/.ssh is copied aside and gets a `Host hostA hostB` block (the key made for the hosts, no
  known_hosts), so plain `ssh hostB` works inside the hosts; `down` puts the copy back exactly.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import signal
import string
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SUBNET = "10.213.14"  # a private /24 unlikely to be in use; it exists only inside our namespaces
INTERFACE = "hvd0"  # each host's interface on the bridge: --network-interface / btl_tcp_if_include
SSH_PORT = 22  # each namespace has its own network stack, so the standard port is free there
NETNS_PREFIX = "hvdwns"  # our namespaces are hvdwns<pid>-...: stale ones (dead pid) can be found and removed
ETC_NETNS = Path("/etc/netns")
ROOT_SSH = Path(pwd.getpwuid(0).pw_dir) / ".ssh"  # horovodrun's ssh writes known_hosts here
# The tools the hosts need, and the Debian package of each (util-linux is always installed).
TOOLS = {"ip": "iproute2", "unshare": "util-linux", "nsenter": "util-linux", "ssh": "openssh-client",
         "ssh-keygen": "openssh-client", "/usr/sbin/sshd": "openssh-server"}


@dataclass
class Host:
    """One namespace host: its name (also its hostname), namespace, bridge address and sshd."""

    name: str
    netns: str
    address: str
    sshd_pid: int = 0


@dataclass
class NamespaceHosts:
    """Running namespace hosts; `state` holds keys, configs, logs and state.json (what `down` undoes)."""

    state: Path
    tag: str
    hosts: list[Host] = field(default_factory=list)
    had_root_ssh: bool = False  # /root/.ssh existed before: restore its copy; else remove it
    made_run_sshd: bool = False
    made_etc_netns: bool = False

    @property
    def bridge_netns(self) -> str:
        return f"{self.tag}-br"

    @property
    def key(self) -> Path:
        """The private key made for these hosts (authorised for root on every host)."""
        return self.state / "id_ed25519"

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.hosts]

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def prefix(self, name: str, machine_sys: bool = False) -> list[str]:
        """Command prefix running a program inside host `name`: its network namespace and hostname.

        `ip netns exec` also mounts a fresh /sys, which has no /sys/fs/cgroup: slurmd's cgroup plugin
        refuses to start there. machine_sys=True enters the network namespace with nsenter instead, keeps
        the machine's /sys, and bind-mounts the host's /etc/hosts in a mount namespace of its own.
        """
        host = self.host(name)
        if not machine_sys:
            return ["ip", "netns", "exec", host.netns, "unshare", "--uts", "sh", "-c",
                    'hostname "$0" && exec "$@"', host.name]
        return ["nsenter", f"--net=/run/netns/{host.netns}", "unshare", "--uts", "--mount", "sh", "-c",
                'mount --bind "$1" /etc/hosts && hostname "$0" && shift && exec "$@"', host.name,
                str(ETC_NETNS / host.netns / "hosts")]

    def run(self, name: str, args: list[str], timeout: float, machine_sys: bool = False,
            **kwargs) -> subprocess.CompletedProcess:
        """Run `args` inside host `name`, output captured as text. On timeout the whole process group
        (launcher, ssh, local ranks) is killed before TimeoutExpired is raised, so nothing runs on;
        what a launcher started on other hosts is killed with their namespaces in `down`."""
        with subprocess.Popen([*self.prefix(name, machine_sys), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, start_new_session=True, **kwargs) as proc:
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)

    def ssh_options(self) -> list[str]:
        """ssh flags for these hosts: the test key, no host-key prompts, nothing written to known_hosts."""
        return ["-i", str(self.key), "-p", str(SSH_PORT), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]

    def interface_bytes(self, name: str) -> int:
        """Bytes received + sent so far on host `name`'s bridge interface (a netlink query, no traffic)."""
        done = subprocess.run(["ip", "-n", self.host(name).netns, "-s", "-j", "link", "show", INTERFACE],
                              check=True, capture_output=True, text=True, timeout=30)
        stats = json.loads(done.stdout)[0]["stats64"]
        return int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])

    def save(self) -> None:
        """state.json, rewritten after every step of `up`, so `down` also undoes a half-finished start."""
        record = {k: v for k, v in asdict(self).items() if k != "state"}
        (self.state / "state.json").write_text(json.dumps(record, indent=2) + "\n")

    @classmethod
    def load(cls, state: Path) -> NamespaceHosts:
        record = json.loads((state / "state.json").read_text())
        return cls(state, record["tag"], [Host(**h) for h in record["hosts"]], record["had_root_ssh"],
                   record["made_run_sshd"], record["made_etc_netns"])


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def our_namespaces() -> list[str]:
    """Every namespace this module names (any run's), from `ip netns list`."""
    out = subprocess.run(["ip", "netns", "list"], check=True, capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(NETNS_PREFIX)]


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _kill(pids: list[int], grace_s: float = 5) -> None:
    """SIGTERM the given processes (ours, by pid), SIGKILL what still runs after `grace_s`."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for pid in pids:
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap our own children, so they do not linger as zombies


def delete_namespace(netns: str) -> None:
    """Kill whatever still runs in `netns` (processes we started there), then delete it and its /etc/netns."""
    listed = subprocess.run(["ip", "netns", "pids", netns], check=False, capture_output=True, text=True)
    _kill([int(p) for p in listed.stdout.split()])
    subprocess.run(["ip", "netns", "del", netns], check=False, capture_output=True)  # removes its veths too
    shutil.rmtree(ETC_NETNS / netns, ignore_errors=True)


def remove_stale() -> None:
    """Namespaces left by a run whose process is gone (killed before its teardown): remove them."""
    for netns in our_namespaces():
        pid = netns[len(NETNS_PREFIX):].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            delete_namespace(netns)


def _make_network(hosts: NamespaceHosts) -> None:
    """The bridge namespace and one namespace per host, each with `hvd0` on the bridge and loopback up."""
    br = hosts.bridge_netns
    _ip("netns", "add", br)
    _ip("-n", br, "link", "add", "br0", "type", "bridge")
    _ip("-n", br, "link", "set", "br0", "up")
    mapping = "".join(f"{h.address} {h.name}\n" for h in hosts.hosts)
    hosts.made_etc_netns = not ETC_NETNS.exists()
    for i, host in enumerate(hosts.hosts):
        _ip("netns", "add", host.netns)
        hosts.save()
        # Created in the bridge namespace with its peer moved straight into the host's: nothing ever
        # appears in the root namespace.
        _ip("-n", br, "link", "add", f"veth{i}", "type", "veth", "peer", "name", INTERFACE, "netns", host.netns)
        _ip("-n", br, "link", "set", f"veth{i}", "master", "br0", "up")
        _ip("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", INTERFACE)
        _ip("-n", host.netns, "link", "set", INTERFACE, "up")
        _ip("-n", host.netns, "link", "set", "lo", "up")
        (ETC_NETNS / host.netns).mkdir(parents=True, exist_ok=True)
        (ETC_NETNS / host.netns / "hosts").write_text(f"127.0.0.1 localhost\n{mapping}")


def _sshd_config(hosts: NamespaceHosts, host: Host) -> Path:
    conf = hosts.state / f"sshd-{host.name}.conf"
    conf.write_text("\n".join([
        f"ListenAddress {host.address}", f"Port {SSH_PORT}", f"HostKey {hosts.state / 'host_ed25519'}",
        f"PidFile {hosts.state / f'sshd-{host.name}.pid'}", f"AuthorizedKeysFile {hosts.state / 'authorized_keys'}",
        "PermitRootLogin prohibit-password", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "PrintMotd no",
        "StrictModes no",  # the state directory is a temporary one, not ~/.ssh with its strict modes
        "MaxStartups 100",  # horovodrun and mpirun open several connections at once
    ]) + "\n")
    return conf


def _start_sshd(hosts: NamespaceHosts, host: Host) -> None:
    """sshd -D in the host (its namespace and hostname, so remote commands get both); ready when it listens."""
    log_path = hosts.state / f"sshd-{host.name}.log"
    with open(log_path, "wb") as log:
        # ip netns exec, unshare and `sh -c exec` all exec in place, so this pid ends up being sshd's.
        proc = subprocess.Popen([*hosts.prefix(host.name), "/usr/sbin/sshd", "-D", "-e", "-f",
                                 str(_sshd_config(hosts, host))], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    host.sshd_pid = proc.pid
    hosts.save()
    deadline = time.monotonic() + 30
    while "Server listening" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd on {host.name} did not start: {log_path.read_text(errors='replace')}")
        time.sleep(0.05)


def _backup_root_ssh(hosts: NamespaceHosts) -> None:
    hosts.had_root_ssh = ROOT_SSH.exists()
    if hosts.had_root_ssh:
        shutil.copytree(ROOT_SSH, hosts.state / "root-ssh-backup", symlinks=True)
    hosts.save()


def _write_root_ssh_config(hosts: NamespaceHosts) -> None:
    """Put our hosts first in /root/.ssh/config (restored by `down`): the test key, and no known_hosts.

    horovodrun's ssh takes no config file and checks known_hosts; an entry left for `hostb` by an earlier
    set of hosts (another host key) would make it refuse with "REMOTE HOST IDENTIFICATION HAS CHANGED".
    """
    ROOT_SSH.mkdir(mode=0o700, exist_ok=True)
    config = ROOT_SSH / "config"
    previous = config.read_text() if config.exists() else ""
    config.write_text(f"# hosts of tests/cluster/netns.py ({hosts.state}); removed by its `down`\n"
                      f"Host {' '.join(hosts.names)}\n    IdentityFile {hosts.key}\n    Port {SSH_PORT}\n"
                      "    UserKnownHostsFile /dev/null\n    StrictHostKeyChecking no\n    LogLevel ERROR\n\n"
                      + previous)
    config.chmod(0o600)


def _restore_root_ssh(hosts: NamespaceHosts) -> None:
    """/root/.ssh exactly as before `up`: the copy put back, or removed if there was none."""
    backup = hosts.state / "root-ssh-backup"
    if hosts.had_root_ssh and not backup.exists():
        return  # the backup never got made: leave the original alone
    shutil.rmtree(ROOT_SSH, ignore_errors=True)
    if hosts.had_root_ssh:
        shutil.copytree(backup, ROOT_SSH, symlinks=True)
        shutil.copystat(backup, ROOT_SSH)


def check_can_run() -> None:
    """Raise RuntimeError naming what is missing: root, or a tool and its Debian package (`make
    install-multihost` installs iproute2 and openssh-server, the latter bringing openssh-client)."""
    if os.geteuid() != 0:
        raise RuntimeError("namespace hosts need root (network namespaces, sshd); CI runs as root")
    missing = [f"{tool} (Debian package {package})" for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"missing {', '.join(missing)}: `make install-multihost` installs them (make test runs it)")


def up(state: Path, count: int = 2, tag: str = "") -> NamespaceHosts:
    """Start `count` hosts (hostA, hostB, ...) with state in `state`; on any failure, undo and raise.

    The namespaces are named after `tag`, by default this process's pid, so that a later `up` removes
    them if this process dies before its `down`.
    """
    check_can_run()
    remove_stale()
    state.mkdir(parents=True, exist_ok=True)
    tag = tag or f"{NETNS_PREFIX}{os.getpid()}"
    letters = string.ascii_uppercase[:count]
    hosts = NamespaceHosts(state.resolve(), tag, [Host(f"host{c}", f"{tag}-{c.lower()}", f"{SUBNET}.{i + 1}")
                                                  for i, c in enumerate(letters)])
    hosts.save()
    try:
        _backup_root_ssh(hosts)
        if not Path("/run/sshd").exists():  # sshd's privilege-separation directory
            Path("/run/sshd").mkdir(mode=0o755)
            hosts.made_run_sshd = True
        _make_network(hosts)
        for key in (hosts.key, hosts.state / "host_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True, timeout=30)
        shutil.copy(hosts.key.with_suffix(".pub"), hosts.state / "authorized_keys")
        _write_root_ssh_config(hosts)
        for host in hosts.hosts:
            _start_sshd(hosts, host)
    except BaseException:
        down(state)
        raise
    return hosts


def down(state: Path) -> list[str]:
    """Undo `up` (also a partial one): sshd stopped by pid, namespaces deleted, /root/.ssh and /run/sshd
    restored. Returns what is still left over (an empty list when all is clean)."""
    hosts = NamespaceHosts.load(state.resolve())
    _kill([h.sshd_pid for h in hosts.hosts if h.sshd_pid])
    for netns in [h.netns for h in hosts.hosts] + [hosts.bridge_netns]:
        delete_namespace(netns)
    _restore_root_ssh(hosts)
    if hosts.made_run_sshd:
        shutil.rmtree("/run/sshd", ignore_errors=True)
    if hosts.made_etc_netns:
        with contextlib.suppress(OSError):  # only if empty: another set of hosts may have entries there
            ETC_NETNS.rmdir()
    left = [f"namespace {n}" for n in our_namespaces() if n.startswith(hosts.tag + "-")]
    left += [f"sshd pid {h.sshd_pid}" for h in hosts.hosts if h.sshd_pid and _alive(h.sshd_pid)]
    left += [f"/etc/netns/{h.netns}" for h in hosts.hosts if (ETC_NETNS / h.netns).exists()]
    return left


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    start = sub.add_parser("up", help="create the hosts; state (keys, logs) in STATE")
    start.add_argument("state", type=Path)
    start.add_argument("--hosts", type=int, default=2, choices=range(2, 9))
    sub.add_parser("down", help="remove everything `up` made").add_argument("state", type=Path)
    inside = sub.add_parser("run", help="run a command inside a host: run STATE hostA -- CMD...")
    inside.add_argument("state", type=Path)
    inside.add_argument("host")
    inside.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.action == "up":
        # This process exits at once: a pid in the tag would make the next `up` take them for stale.
        hosts = up(args.state, args.hosts, tag=f"{NETNS_PREFIX}-byhand")
        print("\n".join(f"{h.name} {h.address} (namespace {h.netns})" for h in hosts.hosts))
        print(f"ssh key: {hosts.key}; run inside a host: {sys.argv[0]} run {args.state} hostA -- CMD")
        return 0
    if args.action == "down":
        left = down(args.state)
        print("left over: " + ", ".join(left) if left else "all removed; `ip netns list` has none of ours")
        return 1 if left else 0
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return subprocess.run([*NamespaceHosts.load(args.state.resolve()).prefix(args.host), *command]).returncode


if __name__ == "__main__":
    sys.exit(main())
