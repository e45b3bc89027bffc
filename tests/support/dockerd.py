"""A private Docker Engine for the tests: Debian's dockerd on a socket of its own, and an image to run.

dockerd runs with no iptables and no bridge (host networking only), vfs storage and its own data root,
exec root, pid file and containerd namespaces, so it shares nothing with an engine the machine may run
(never /var/run/docker.sock; DOCKER_HOST is never set). The image is imported from a root filesystem
built here (no registry): a near-empty tree with `bin`, `lib`, `lib64` linked into `usr/`, whose
servers run the host's Python and this venv's `jupyterhub-singleuser` through read-only bind mounts
(`runtime_volumes`).
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

DOCKERD = "/usr/sbin/dockerd"
PR_SET_PDEATHSIG = 1
IMAGE = "fleethub-test/singleuser:1"
PASSWD = "root:x:0:0:root:/root:/bin/sh\njovyan:x:1000:1000::/home/jovyan:/bin/sh\n"
GROUP = "root:x:0:\njovyan:x:1000:\n"


@dataclass(frozen=True)
class Dockerd:
    """A running private engine."""

    root: Path
    socket: Path
    pid: int
    image: str

    @property
    def host(self) -> str:
        """The engine's address as `spawner.docker.host` takes it."""
        return f"unix://{self.socket}"

    def client(self) -> httpx.Client:
        """A synchronous client of the engine's API (unversioned paths)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://docker",
                            timeout=30, trust_env=False)

    def containers(self) -> list[dict[str, object]]:
        """Every container of the engine, running or not."""
        with self.client() as c:
            return list(c.get("/containers/json", params={"all": "true"}).json())

    def inspect(self, ref: str) -> dict[str, object] | None:
        with self.client() as c:
            r = c.get(f"/containers/{ref}/json")
            return None if r.status_code == 404 else dict(r.raise_for_status().json())


def runtime_volumes() -> dict[str, str]:
    """Bind mounts that let the image run this interpreter and venv: the host's /usr, the Python install
    and the venv, read-only, each at its own path."""
    paths = {Path("/usr"), Path(sys.base_prefix).resolve(), Path(sys.prefix)}
    volumes = {}
    for path in sorted(paths):
        if path != Path("/usr") and Path("/usr") in path.parents:
            continue  # inside /usr already
        volumes[str(path)] = f"{path}:ro"
    return volumes


def singleuser_command() -> list[str]:
    """This venv's jupyterhub-singleuser (root in the container: it must be told that is fine)."""
    return [str(Path(sys.prefix) / "bin" / "jupyterhub-singleuser"), "--allow-root"]


def _rootfs_tar() -> bytes:
    """The image's root filesystem as a tar: directories, the usr/ links, passwd and group."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        # sbin is a directory of its own: the engine mounts its init (HostConfig Init) at /sbin/docker-init,
        # which it could not create through a link into the read-only /usr
        for name in ("usr", "etc", "tmp", "proc", "sys", "dev", "root", "home", "home/jovyan", "srv", "run", "sbin"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if name == "tmp" else 0o755
            if name == "home/jovyan":
                info.uid = info.gid = 1000
            tar.addfile(info)
        for name in ("bin", "lib", "lib64"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = f"usr/{name}"
            tar.addfile(info)
        for name, text in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _unmount_under(root: Path) -> None:
    """Unmount what dockerd left mounted under `root` (its default network namespace), deepest first."""
    prefix = f"{root}/"
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f if line.split()[1].startswith(prefix)]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def _wait_ready(proc: subprocess.Popen[bytes], socket: Path, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dockerd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        if socket.exists():
            try:
                with httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://docker",
                                  timeout=2, trust_env=False) as c:
                    if c.get("/_ping").status_code == 200:
                        return
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"dockerd did not answer within {timeout:.0f}s: {log.read_text()[-2000:]}")


def _reap_shims() -> None:
    """Reap the containerd shims re-parented to this process (when a test made it a subreaper) that exited
    with their containers: only those, whose exit statuses nobody else waits for."""
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            comm = Path(f"/proc/{entry}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] == "Z" and int(fields[1]) == me and comm.startswith("containerd-shim"):
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # dockerd and its containerd
            proc.wait(10)


@contextmanager
def running_dockerd() -> Iterator[Dockerd]:
    """Start a private dockerd with the test image imported; stop it, unmount and remove its files after.

    Raises:
        RuntimeError: dockerd is not installed (Debian's docker.io), or did not start.
    """
    if not os.access(DOCKERD, os.X_OK):
        raise RuntimeError(f"{DOCKERD} is missing: install Debian's docker.io (apt-get install docker.io)")
    root = Path(tempfile.mkdtemp(prefix="fh-dockerd-"))  # short: a socket path holds at most 107 bytes
    socket, log = root / "docker.sock", root / "dockerd.log"
    namespace = f"fh-test-{os.getpid()}"
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")}
    if not any(Path(d, "containerd").exists() for d in env["PATH"].split(":")):
        env["PATH"] += ":/usr/sbin:/usr/bin:/sbin:/bin"
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [DOCKERD, "--iptables=false", "--ip6tables=false", "--bridge=none", "--storage-driver=vfs",
             "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{socket}",
             "--containerd-namespace", namespace, "--containerd-plugins-namespace", f"{namespace}-plugins"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            # a test process killed outright (no teardown) takes its engine along: SIGTERM when it dies, and
            # dockerd stops its containers on the way out
            preexec_fn=lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM),
        )
    try:
        _wait_ready(proc, socket, log)
        engine = Dockerd(root=root, socket=socket, pid=proc.pid, image=IMAGE)
        with engine.client() as c:
            repo, tag = IMAGE.rsplit(":", 1)
            r = c.post("/images/create", params={"fromSrc": "-", "repo": repo, "tag": tag},
                       content=_rootfs_tar(), headers={"Content-Type": "application/x-tar"})
            r.raise_for_status()
            if c.get(f"/images/{IMAGE}/json").status_code != 200:
                raise RuntimeError(f"the test image was not imported: {r.text[-500:]}")
        yield engine
    finally:
        try:
            with Dockerd(root, socket, proc.pid, IMAGE).client() as c:
                for container in c.get("/containers/json", params={"all": "true"}).json():
                    c.delete(f"/containers/{container['Id']}", params={"force": "true", "v": "true"})
        except Exception:
            pass  # an engine that does not answer is stopped all the same
        _stop(proc)
        _reap_shims()
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
