"""Settings of the spawner's backends and profiles: `[spawner.system_user]`, `[spawner.docker]`,
`[spawner.batch]`, `[[spawner.profiles]]`, and the resource limits every backend is given.

Names follow the JupyterHub spawners whose job each section does (SudoSpawner/LocalProcessSpawner,
DockerSpawner, BatchSpawner, KubeSpawner's `profile_list`). Imported by `fleethub.shared.settings`,
which holds them under `[spawner]`.
"""

from __future__ import annotations

import os
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def uid_problem(uid: int, uid_range: tuple[int, int]) -> str | None:
    """Why an account of `uid` may not run a user's server (None: it may)."""
    low, high = uid_range
    if low <= uid < high:
        return None
    return (f"has uid {uid}, outside spawner.system_user.uid_range [{low}, {high}): a system account, not a "
            "user's (map the hub user to the user's own account in spawner.system_user.username_map)")


def parse_size(value: str | int | None) -> int | None:
    """Bytes of a size as JupyterHub's `mem_limit` takes it: an integer, or a number with K, M, G or T
    (powers of 1024: "512M", "1.5G").

    Raises:
        ValueError: not such a size.
    """
    if value is None or isinstance(value, int):
        if isinstance(value, int) and value < 0:
            raise ValueError("a size cannot be negative")
        return value
    match = _SIZE_RE.match(value)
    if not match:
        raise ValueError(f"{value!r} is not a size (bytes, or a number with K, M, G or T: '512M', '2G')")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SystemUserSettings(_Section):
    """`[spawner.system_user]`: each server runs as its user's own Unix account (never root)."""

    mediator: list[str] = Field(
        default_factory=list,
        description="Command prefix that runs a command as the user, each item formatted with {username} "
                    "(SudoSpawner's model), e.g. ['sudo', '-n', '-E', '-u', '{username}', '--']: the worker need "
                    "not be root. It runs the as-user helper `<the worker's python> -I -m "
                    "fleethub.services.spawner.asuser …` (start, find, end), so sudoers grants exactly that, with "
                    "SETENV (-E keeps JUPYTERHUB_* and FH_SERVER_ID, which env_reset drops). Empty: the worker "
                    "(root) starts servers as the user itself.",
    )
    create_system_users: bool = Field(
        False, description="Create a missing Unix account (useradd) instead of refusing the spawn."
    )
    username_map: dict[str, str] = Field(
        default_factory=dict,
        description="Hub user name -> Unix account name, for hub names that are not Unix names (those are "
                    "refused without a mapping).",
    )
    uid_range: tuple[int, int] = Field(
        (1000, 60000),
        description="The uids a server may run as: from the first to below the second (login.defs' UID_MIN and "
                    "UID_MAX). Accounts outside (postgres, slurm, nobody: system accounts) are refused, so a hub "
                    "user named after one never gets its server. Applies to system-user and batch.",
    )
    useradd: list[str] = Field(
        default_factory=lambda: ["useradd", "--create-home", "--shell", "/bin/bash", "--", "{username}"],
        description="Command creating a missing account when create_system_users is on ({username} filled in).",
    )

    @field_validator("mediator")
    @classmethod
    def _mediator_names_the_user(cls, value: list[str]) -> list[str]:
        if value and not any("{username}" in part for part in value):
            raise ValueError("the mediator must name the account to run as with {username} "
                             "(e.g. ['sudo', '-n', '-E', '-u', '{username}', '--'])")
        return value


class DockerSettings(_Section):
    """`[spawner.docker]`: each server runs in a container of a Docker Engine (DockerSpawner's names)."""

    host: str | None = Field(
        None, description="The engine's address, DOCKER_HOST style (unix:///var/run/docker.sock, tcp://h:2375); "
                          "default: $DOCKER_HOST, else the local socket.",
    )
    image: str = Field("quay.io/jupyterhub/singleuser:latest", description="Image of the servers.")
    allowed_images: dict[str, str] = Field(
        default_factory=dict,
        description="Images a user may choose (display name -> image), offered in the spawn form; "
                    "user_options 'image' must be one of them. Empty: only `image`.",
    )
    name_template: str = Field(
        "jupyter-{username}{servername_suffix}",
        description="Container name ({username}, {servername} escaped to lower-case letters, digits and '-'; "
                    "{servername_suffix} = '.<server>' or '') — deterministic: it is the container's identity, "
                    "so an adopting worker finds a container whose worker died.",
    )
    cmd: list[str] | None = Field(None, description="The server command in the container (spawner.args "
                                                    "appended); default spawner.cmd; [] the image's own command.")
    volumes: dict[str, str] = Field(
        default_factory=dict,
        description="Host path or volume name -> container path ('path:ro' for read-only), {username} "
                    "(escaped as in name_template) filled in in both.",
    )
    network_name: str = Field("host", description="Network of the containers; 'host': the host's network.")
    remove: bool = Field(True, description="Remove a container once its server stops.")
    extra_create_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra fields of the Engine API's container create request, by their API names "
                    "({User = '1000:100', WorkingDir = '/srv'}); HostConfig and Labels are merged with "
                    "fleethub's (its own labels win).",
    )
    extra_host_config: dict[str, Any] = Field(
        default_factory=dict, description="Extra fields of the container's HostConfig."
    )

    def engine_address(self) -> str:
        """`host`, else `$DOCKER_HOST`, else the engine's local socket."""
        return self.host or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


DEFAULT_BATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --output={output_path}
#SBATCH --chdir={homedir}
#SBATCH --export=ALL
{partition_line}{runtime_line}{memory_line}{nprocs_line}{options_line}
exec {cmd}
"""


class BatchSettings(_Section):
    """`[spawner.batch]`: each server runs as a batch job submitted as its user (BatchSpawner's names;
    the defaults drive Slurm, the commands and their parsing are settings so PBS, SGE or LSF fit too).

    Every command is split like a shell line (shlex) and then each word is formatted on its own
    ({username}, {job_id}, {job_name}): a value never becomes two words or a shell construct.
    """

    script: str = Field(DEFAULT_BATCH_SCRIPT, description="Batch script template ({job_name}, {homedir}, "
                                                          "{username}, {cmd}, {port}, {output_path}, {req_*} and "
                                                          "the *_line fields: '#SBATCH --partition=...' when set).")
    output_path: str = Field("{homedir}/.fleethub-{job_name}.log",
                             description="Where the job's output goes ({homedir}, {job_name}, {username}).")
    output_cmd: str = Field("tail -c 1000 -- {output_path}",
                            description="Prints the end of a job's output, run as the user (exec_prefix) when a "
                                        "job ends before its server ran: the failed spawn's message shows it to "
                                        "its user. '' to show nothing.")
    req_partition: str = Field("", description="Partition (queue) of the jobs.")
    req_runtime: str = Field("", description="Wall time of a job, e.g. '8:00:00'.")
    req_memory: str = Field("", description="Memory of a job, e.g. '4G'; default: spawner.mem_limit.")
    req_nprocs: str = Field("", description="CPUs of a job; default: spawner.cpu_limit rounded up.")
    req_options: str = Field("", description="Extra scheduler options, one line of the script.")
    exec_prefix: str = Field("sudo -E -u {username}", description="Prefix of every scheduler command: run it "
                                                                   "as the user ('' to run as the worker).")
    submit_cmd: str = Field("sbatch --parsable", description="Submits the script (on stdin); prints the job id.")
    job_id_re: str = Field(r"^\s*(\S+?)(?:;\S*)?\s*$",
                           description="Group 1 is the job id in the submit command's output.")
    query_cmd: str = Field("squeue -h -t all -j {job_id} -o '%T %B %r'",
                           description="Prints the job's state, its host and why it waits.")
    cancel_cmd: str = Field("scancel {job_id}", description="Cancels the job.")
    find_cmd: str = Field("squeue -h -u {username} -n {job_name} -o '%i'",
                          description="Prints the ids of the live jobs named {job_name}, one a line (adoption of "
                                      "a job whose id was never saved; a stop cancels them all).")
    state_pending_re: str = Field(r"^(?:PENDING|CONFIGURING)", description="A query output of a queued job.")
    state_running_re: str = Field(r"^(?:RUNNING|COMPLETING)", description="A query output of a running job.")
    state_unknown_re: str = Field(r"^slurm_load_jobs error: (?:Socket timed out|Unable to contact)",
                                  description="A query output meaning the scheduler did not answer.")
    state_gone_re: str = Field(r"Invalid job id",
                               description="An error of a failed query meaning the scheduler forgot the job (any "
                                           "other failure of the query is 'did not answer').")
    host_re: str = Field(r"^\S+\s+(\S+)", description="Group 1 is the job's host in the query output.")
    job_name_template: str = Field("fh-{username}-{servername}-{spawn_short}",
                                   description="Job name, derived from the server's key and spawn "
                                               "({username}, {servername}: encoded names; {spawn_short}).")
    env_keep: list[str] = Field(
        default_factory=lambda: ["SLURM_CONF"],
        description="Variables of the worker's environment the scheduler commands get (besides "
                    "spawner.env_keep); a job exported with --export=ALL gets them too.",
    )
    environment: dict[str, str] = Field(
        default_factory=dict,
        description="Variables set for the scheduler commands (and the job, with --export=ALL), e.g. "
                    "{SLURM_CONF = '/etc/slurm-test/slurm.conf'}.",
    )
    command_timeout: float = Field(30.0, gt=0, description="Seconds a scheduler command may take.")
    cancel_timeout: float = Field(60.0, gt=0, description="Seconds a stop waits for a cancelled job to be gone.")

    @field_validator("env_keep")
    @classmethod
    def _no_secrets_kept(cls, value: list[str]) -> list[str]:
        for name in value:  # the job inherits them (--export=ALL): the hub's secrets never go
            if name.upper().startswith("FLEETHUB_") or name.upper() == "JUPYTERHUB_CRYPT_KEY":
                raise ValueError(f"{name!r} carries the hub's secrets and may not be passed to jobs")
        return value


class Profile(_Section):
    """One `[[spawner.profiles]]` entry (KubeSpawner's `profile_list` shape)."""

    display_name: str = Field(description="Name shown in the spawn form.")
    slug: str = Field("", description="Identifier sent as user_options 'profile'; default: from display_name.")
    description: str = Field("", description="Text under the name in the form.")
    default: bool = Field(False, description="Chosen when user_options name no profile.")
    backend: str | None = Field(None, description="Backend of this profile; default spawner.backend.")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of [spawner] this profile changes (any key, sections merged: "
                    "{mem_limit = '2G', docker = {image = '…'}}).",
    )

    @field_validator("slug")
    @classmethod
    def _slug(cls, value: str) -> str:
        if value and not SLUG_RE.fullmatch(value):
            raise ValueError(f"{value!r} is not a slug (lower-case letters, digits, '-', '_'; up to 63)")
        return value

    def key(self) -> str:
        """The slug, or one made of the display name."""
        if self.slug:
            return self.slug
        made = re.sub(r"[^a-z0-9]+", "-", self.display_name.lower()).strip("-")[:63]
        return made or "profile"
