"""The `batch` backend: each server is a batch job (Slurm by default) submitted as its user's own account.

A spawn's identity, recorded before anything is submitted, is the job's name (derived from the server's key
and spawn id), the Unix account, the address and port the server will listen on, and the scheduler commands
of that spawn (its profile's): an adopting worker finds a job whose id was never saved by its name
(`find_cmd`). `start` submits the script on the submit command's stdin (`exec_prefix`: `sudo -E -u
{username}`, so the job is the user's), reports "queued" and "running on <node>" as progress, and returns
once the job runs; the worker then waits for the server to answer HTTP.

The server's token reaches the job through the submit command's environment (sbatch exports it,
`--export=ALL`), never through a command line (visible in `ps`) or the script. The port is chosen free on
the worker's machine: right when the job runs here (a one-node cluster, a worker on the node); on a
remote node it is only likely free, and a server that cannot bind it fails its start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import math
import os
import pwd
import re
import shlex
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.shared.backend_settings import BatchSettings, parse_size, uid_problem
from fleethub.shared.names import encode_token
from fleethub.shared.net import free_port
from fleethub.shared.settings import ServiceSettings, SpawnerSettings, kept_environment

log = logging.getLogger(__name__)

QUERY_EVERY = 1.0  # seconds a job's answered state is reused by poll (the readiness loop polls every 50 ms)
UNIX_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,31}$")
"""A Unix account name a job may run as (system-user's rule: no `#uid`, no leading `-`)."""
_SCHED_KEYS = ("exec_prefix", "query_cmd", "cancel_cmd", "find_cmd", "state_pending_re", "state_running_re",
               "state_unknown_re", "state_gone_re", "host_re")


class Phase(Enum):
    """Where a job stands, as its query says."""

    QUEUED = auto()
    RUNNING = auto()
    ENDED = auto()
    UNKNOWN = auto()  # the scheduler did not answer


class BatchError(Exception):
    """A scheduler command failed, or a job did not run; the message says which and why."""


class JobEnded(BatchError):
    """The job ended before its server ran."""


@dataclass(frozen=True)
class JobStatus:
    """What a query says of one job: its phase, its host once it runs, and the query's text (for messages)."""

    phase: Phase
    host: str | None
    text: str


# --- pure parts: commands, script, parsing (unit-tested) ------------------------------------------


def command(template: str, prefix: str, values: Mapping[str, str]) -> list[str]:
    """The argument list of `prefix` + `template`, each split like a shell line and then formatted word by
    word: a value never becomes two words, an option or a shell construct.

    Raises:
        BatchError: a template names a value that does not exist.
    """
    words = shlex.split(prefix) + shlex.split(template)
    try:
        return [word.format_map(values) for word in words]
    except (KeyError, IndexError, ValueError) as exc:
        raise BatchError(f"spawner.batch: cannot fill in {' '.join(words)!r}: {exc!r}") from None


def fill(template: str, values: Mapping[str, str], setting: str) -> str:
    """`template` with `values` filled in.

    Raises:
        BatchError: it names a value that does not exist (the message names the setting).
    """
    try:
        return template.format_map(values)
    except (KeyError, IndexError, ValueError) as exc:
        raise BatchError(f"spawner.batch.{setting}: cannot fill in {template!r}: {exc!r}") from None


def job_name(spec: ServerSpec, template: str) -> str:
    """The job name of a spawn: `job_name_template` with the encoded user and server names and the start of
    the spawn id (one token of letters, digits, '-' and '_', so it needs no quoting anywhere)."""
    return template.format(username=encode_token(spec.user), servername=encode_token(spec.server_name),
                           spawn_short=spec.spawn_id[:12], spawn_id=spec.spawn_id)


def requests(config: SpawnerSettings) -> dict[str, str]:
    """`req_*` of the spawn, with `req_memory` from `mem_limit` (MiB, rounded up) and `req_nprocs` from
    `cpu_limit` (rounded up) when not set."""
    batch = config.batch
    memory = batch.req_memory
    if not memory and config.mem_limit:
        memory = f"{math.ceil((parse_size(config.mem_limit) or 0) / 1024**2)}M"
    nprocs = batch.req_nprocs or (str(math.ceil(config.cpu_limit)) if config.cpu_limit else "")
    return {"req_partition": batch.req_partition, "req_runtime": batch.req_runtime, "req_memory": memory,
            "req_nprocs": nprocs, "req_options": batch.req_options}


def render_script(config: SpawnerSettings, values: Mapping[str, str]) -> str:
    """The batch script of a spawn: `batch.script` with `values` (job_name, homedir, username, cmd, port),
    the `req_*` and their `#SBATCH` lines.

    Raises:
        BatchError: a value holds a line break (it would add lines to the script), or the template names
            a value that does not exist.
    """
    req = requests(config)
    lines = {
        "partition_line": f"#SBATCH --partition={req['req_partition']}\n" if req["req_partition"] else "",
        "runtime_line": f"#SBATCH --time={req['req_runtime']}\n" if req["req_runtime"] else "",
        "memory_line": f"#SBATCH --mem={req['req_memory']}\n" if req["req_memory"] else "",
        "nprocs_line": f"#SBATCH --cpus-per-task={req['req_nprocs']}\n" if req["req_nprocs"] else "",
        "options_line": f"#SBATCH {req['req_options']}\n" if req["req_options"] else "",
    }
    everything = {**values, **req}
    for key, value in everything.items():
        if "\n" in value or "\r" in value or "\0" in value:
            raise BatchError(f"spawner.batch: {key} {value[:60]!r} holds a line break; it cannot go in a script")
    try:
        return config.batch.script.format_map({**everything, **lines})
    except (KeyError, IndexError, ValueError) as exc:
        raise BatchError(f"spawner.batch.script: cannot fill it in: {exc!r}") from None


def parse_job_id(output: str, pattern: str) -> str | None:
    """The job id in the submit command's output (group 1 of `job_id_re` on its first line), or None."""
    first = next((line for line in output.splitlines() if line.strip()), "")
    match = re.search(pattern, first)
    return match.group(1) if match else None


def parse_status(sched: Mapping[str, str], returncode: int, stdout: str, stderr: str) -> JobStatus:
    """What a query's outcome says of the job (see `BatchSettings`' state_*_re and host_re)."""
    out = stdout.strip()
    text = out or stderr.strip()
    if re.search(sched["state_unknown_re"], f"{out}\n{stderr.strip()}", re.MULTILINE):
        return JobStatus(Phase.UNKNOWN, None, text)
    if returncode != 0:
        gone = re.search(sched["state_gone_re"], f"{out}\n{stderr}")
        return JobStatus(Phase.ENDED if gone else Phase.UNKNOWN, None, text)
    if re.search(sched["state_pending_re"], out):
        return JobStatus(Phase.QUEUED, None, text)
    if re.search(sched["state_running_re"], out):
        match = re.search(sched["host_re"], out)
        return JobStatus(Phase.RUNNING, match.group(1) if match else None, text)
    return JobStatus(Phase.ENDED, None, text or "no longer listed")


def is_wildcard(ip: str) -> bool:
    """Whether `ip` means every interface (the server listens on its node's addresses)."""
    if ip in ("", "*"):
        return True
    try:
        return ipaddress.ip_address(ip).is_unspecified
    except ValueError:
        return False


def unix_account(config: SpawnerSettings, user: str) -> str:
    """The Unix account a hub user's jobs run as (`system_user.username_map`, else the same name).

    Raises:
        BatchError: jobs run as their users (`{username}` in exec_prefix) and this is not a valid Unix account
            name (sudo reads `#0` as uid 0, `-x` as an option): it never reaches a command line, not even
            the scheduler commands of a stop.
    """
    name = config.system_user.username_map.get(user, user)
    runs_as_user = "{username}" in config.batch.exec_prefix  # else jobs run as the worker's account
    if runs_as_user and (not UNIX_NAME_RE.fullmatch(name) or name.isdigit()):
        raise BatchError(f"{name!r} is not a valid Unix account name to run {user!r}'s batch job as (letters, "
                         "digits, '.', '_', '-', up to 32): map it in spawner.system_user.username_map")
    return name


# --- the backend ------------------------------------------------------------------------------------


class BatchBackend:
    """Submits, queries and cancels batch jobs with the commands of `[spawner.batch]`."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self._seen: dict[str, tuple[float, JobStatus]] = {}  # job id → (when, status): poll's short memory

    @staticmethod
    def _scheduler_vars(batch: BatchSettings) -> dict[str, str]:
        """What the scheduler's commands need of the worker's environment (SLURM_CONF) and the settings."""
        return {**kept_environment(batch.env_keep), **batch.environment}

    def _sched_env(self, batch: BatchSettings) -> dict[str, str]:
        """The environment of a query, cancel or find: the allow list and the scheduler's variables, never a
        server's token."""
        return {**kept_environment(self.settings.spawner.env_keep), **self._scheduler_vars(batch)}

    async def _run(self, argv: list[str], env: dict[str, str], *, stdin: str | None = None,
                   timeout: float) -> tuple[int, str, str]:
        # umask 077 (through sh: uvloop's subprocesses take no umask): the job's output files, created
        # with the submitter's umask, are the user's alone
        argv = ["/bin/sh", "-c", 'umask 077 && exec "$@"', "sh", *argv]
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise BatchError(f"cannot run {argv[4]!r}: {exc.strerror or exc}") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin.encode() if stdin is not None else None), timeout)
        except (TimeoutError, asyncio.CancelledError):
            if proc.returncode is None:
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")

    async def _sched(self, state: Mapping[str, Any], key: str, values: Mapping[str, str]) -> tuple[int, str, str]:
        """Run the scheduler command `key` (query_cmd, cancel_cmd, find_cmd) of the spawn `state` names."""
        sched = state["sched"]
        batch = self.settings.spawner.batch
        argv = command(sched[key], sched["exec_prefix"], {"username": state["username"], **values})
        try:
            return await self._run(argv, self._sched_env(batch), timeout=batch.command_timeout)
        except TimeoutError:
            raise BatchError(f"{' '.join(argv)[:200]} did not answer within {batch.command_timeout:g}s") from None

    async def _status(self, state: Mapping[str, Any], job_id: str) -> JobStatus:
        rc, out, err = await self._sched(state, "query_cmd", {"job_id": job_id, "job_name": state["job_name"]})
        status = parse_status(state["sched"], rc, out, err)
        if status.phase == Phase.ENDED:
            self._seen.pop(job_id, None)
        else:
            self._seen[job_id] = (time.monotonic(), status)
        return status

    async def _find(self, state: Mapping[str, Any]) -> list[str]:
        """The live jobs named as the spawn's job (several only if a submit raced a dead worker's)."""
        rc, out, err = await self._sched(state, "find_cmd", {"job_name": state["job_name"]})
        if rc != 0:
            raise BatchError(f"the scheduler did not list the jobs named {state['job_name']}: "
                             f"{(err or out).strip()[:300]}")
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    async def _jobs(self, state: Mapping[str, Any]) -> list[str]:
        job_id = state.get("job_id")
        return [str(job_id)] if job_id else await self._find(state)

    def identity(self, spec: ServerSpec) -> dict[str, Any]:
        config = spec.config
        ip = config.ip
        sched = config.batch.model_dump(include=set(_SCHED_KEYS))
        return {"job_name": job_name(spec, config.batch.job_name_template),
                "username": unix_account(config, spec.user), "ip": ip,
                "port": free_port("0.0.0.0" if is_wildcard(ip) else ip), "sched": sched}

    async def start(self, spec: ServerSpec, identity: dict[str, Any]) -> dict[str, Any]:
        config = spec.config
        batch = config.batch
        username = str(identity["username"])
        homedir = self._home(batch, username, spec)
        port = int(identity["port"])
        names = {"job_name": str(identity["job_name"]), "homedir": homedir, "username": username}
        output_path = fill(batch.output_path, names, "output_path")
        script = render_script(config, {**names, "port": str(port), "output_path": output_path,
                                        "cmd": shlex.join([*config.cmd, *config.args])})
        env = {**spec.env, **self._scheduler_vars(self.settings.spawner.batch),  # the worker's way to its scheduler
               "JUPYTERHUB_SERVICE_URL": f"http://{identity['ip']}:{port}{spec.prefix}"}
        argv = command(batch.submit_cmd, batch.exec_prefix, {"username": username, "job_name": identity["job_name"]})
        try:
            rc, out, err = await self._run(argv, env, stdin=script, timeout=batch.command_timeout)
        except TimeoutError:
            raise BatchError(f"submitting the batch job: {argv[0]} did not answer within "
                             f"{batch.command_timeout:g}s") from None
        job_id = parse_job_id(out, batch.job_id_re) if rc == 0 else None
        if job_id is None:
            raise BatchError(f"submitting the batch job failed ({' '.join(argv[:1] + argv[-2:])} exited {rc}): "
                             f"{(err or out).strip()[:500]}")
        state = {**identity, "job_id": job_id}
        log.info("%s/%s: batch job %s submitted as %s", spec.user, spec.server_name, job_id, username)
        try:
            return await self._until_running(spec, state)
        except JobEnded as exc:
            raise BatchError(f"{exc}; {await self._output_tail(batch, username, output_path)}") from None

    async def _output_tail(self, batch: BatchSettings, username: str, output_path: str) -> str:
        """The end of a job's output as its user reads it (never as the worker: the file is the user's)."""
        if not batch.output_cmd:
            return f"its output is in {output_path}"
        argv = command(batch.output_cmd, batch.exec_prefix, {"username": username, "output_path": output_path})
        try:
            rc, out, _ = await self._run(argv, self._sched_env(batch), timeout=batch.command_timeout)
        except (TimeoutError, BatchError) as exc:
            return f"its output ({output_path}) could not be read: {exc}"
        text = out.strip() if rc == 0 else ""
        return f"the end of its output ({output_path}):\n{text}" if text else f"its output is in {output_path}"

    def _home(self, batch: BatchSettings, username: str, spec: ServerSpec) -> str:
        """The home of the account the job runs as; a name that is not a Unix account name (sudo's `#0` is
        uid 0) and an account of uid 0 are refused: a hub user named `root` never gets a root job."""
        if "{username}" not in batch.exec_prefix:  # jobs run as the worker's account
            return spec.env.get("HOME", "/")
        try:
            pw = pwd.getpwnam(username)
        except KeyError:
            raise BatchError(f"there is no Unix account {username!r} to run {spec.user!r}'s batch job as (each "
                             "job runs as its user's own account)") from None
        if pw.pw_uid == 0:
            raise BatchError(f"refusing to run the batch job of {spec.user!r} as root: account {username!r} has uid 0")
        problem = uid_problem(pw.pw_uid, spec.config.system_user.uid_range)
        if problem is not None:
            raise BatchError(f"refusing to run the batch job of {spec.user!r} as account {username!r}: it {problem}")
        if pw.pw_uid == os.geteuid():  # the job could read the worker's environment (database password, hub key)
            raise BatchError(f"refusing to run the batch job of {spec.user!r} as the worker's own account "
                             f"{username!r}: map the hub user to another account (spawner.system_user.username_map)")
        return pw.pw_dir

    async def _until_running(self, spec: ServerSpec, state: dict[str, Any]) -> dict[str, Any]:
        """Wait for the job to run; report its queueing; give up a little before the worker's start timeout,
        with a message saying where the job stood (the worker's own timeout could only say "did not start")."""
        timeout = spec.config.start_timeout
        deadline = time.monotonic() + timeout - min(2.0, timeout * 0.2)
        job_id = str(state["job_id"])
        said: Phase | None = None
        submitted = time.monotonic()
        while True:
            status = await self._status(state, job_id)
            if status.phase == Phase.RUNNING:
                host = status.host or ""
                log.info("batch job %s of %s running on %s after %.2fs", job_id, state["job_name"], host,
                         time.monotonic() - submitted)
                await spec.progress(f"Batch job {job_id} running on {host or 'its node'}")
                return {**state, "host": host}
            if status.phase == Phase.ENDED:
                raise JobEnded(f"batch job {job_id} ended before its server ran ({status.text[:300]})")
            if status.phase == Phase.QUEUED and said != Phase.QUEUED:
                await spec.progress(f"Batch job {job_id} queued")
                said = Phase.QUEUED
            if time.monotonic() > deadline:
                where = ("still queued" if status.phase == Phase.QUEUED
                         else "not seen running (the scheduler did not answer)")
                raise BatchError(f"batch job {job_id} {where} after {timeout:g}s ({status.text[:300]}); it is "
                                 "cancelled")
            # a job usually runs within a second or two of its submit: look often then, rarely after (each
            # look is a sudo and a squeue)
            waited = time.monotonic() - submitted
            await asyncio.sleep(0.1 if waited < 2 else 0.25 if waited < 10 else 0.5)

    async def locate(self, state: dict[str, Any]) -> dict[str, Any] | None:
        """The running job of `state`; a queued one is waited for (up to spawner.start_timeout)."""
        deadline = time.monotonic() + self.settings.spawner.start_timeout
        for job_id in await self._jobs(state):
            while True:
                status = await self._status(state, job_id)
                if status.phase == Phase.UNKNOWN:
                    raise BatchError(f"the scheduler did not answer for batch job {job_id}: {status.text[:300]}")
                if status.phase == Phase.RUNNING:
                    return {**state, "job_id": job_id, "host": status.host or ""}
                if status.phase == Phase.ENDED or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
        return None

    def target(self, state: dict[str, Any]) -> str:
        ip = str(state["ip"])
        host = str(state.get("host") or "") if is_wildcard(ip) else ip
        if not host:
            raise BatchError(f"batch job {state.get('job_id')} has no host yet")
        return f"http://{host}:{state['port']}"

    async def poll(self, state: dict[str, Any]) -> bool:
        """Whether the job is queued or running; a scheduler that does not answer raises (never 'gone')."""
        for job_id in await self._jobs(state):
            seen = self._seen.get(job_id)
            if seen is not None and time.monotonic() - seen[0] < QUERY_EVERY:
                return True
            status = await self._status(state, job_id)
            if status.phase == Phase.UNKNOWN:
                raise BatchError(f"the scheduler did not answer for batch job {job_id}: {status.text[:300]}")
            if status.phase != Phase.ENDED:
                return True
            log.info("batch job %s of %s is over: %s", job_id, state["job_name"], status.text[:300])
        return False

    async def stop(self, state: dict[str, Any]) -> None:
        """Cancel the job (and any other live job of the spawn's name), then wait until none is left."""
        jobs = set(await self._find(state))
        if state.get("job_id"):
            jobs.add(str(state["job_id"]))
        for job_id in sorted(jobs):
            rc, out, err = await self._sched(state, "cancel_cmd", {"job_id": job_id, "job_name": state["job_name"]})
            if rc != 0:
                log.info("cancel of batch job %s: %s", job_id, (err or out).strip()[:300])
        timeout = self.settings.spawner.batch.cancel_timeout
        deadline = time.monotonic() + timeout
        for job_id in sorted(jobs):
            while (status := await self._status(state, job_id)).phase != Phase.ENDED:
                if time.monotonic() > deadline:
                    raise BatchError(f"batch job {job_id} still {status.text[:200]!r} {timeout:g}s after its "
                                     "cancel")
                await asyncio.sleep(0.2)
            self._seen.pop(job_id, None)
