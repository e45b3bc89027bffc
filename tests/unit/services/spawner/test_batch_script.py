"""The batch backend's pure parts: its commands (no shell injection), its script, and the parsing of what
the scheduler says."""

from __future__ import annotations

import pytest

from fleethub.services.spawner.backends.base import ServerSpec
from fleethub.services.spawner.backends.batch import (
    BatchError,
    Phase,
    command,
    fill,
    is_wildcard,
    job_name,
    parse_job_id,
    parse_status,
    render_script,
    requests,
)
from fleethub.shared.backend_settings import BatchSettings
from fleethub.shared.settings import SpawnerSettings

SLURM = BatchSettings().model_dump()
VALUES = {"job_name": "fh-alice-_-0123456789ab", "homedir": "/home/alice", "username": "alice",
          "cmd": "/venv/bin/jupyterhub-singleuser --debug", "port": "40000",
          "output_path": "/home/alice/.fleethub-fh-alice-_-0123456789ab.log"}


def config(**batch: str) -> SpawnerSettings:
    return SpawnerSettings.model_validate({"batch": batch})


def test_each_word_is_formatted_alone() -> None:
    hostile = "x; rm -rf / #"
    argv = command("squeue -h -u {username} -n {job_name} -o '%i'", "sudo -E -u {username}",
                   {"username": hostile, "job_name": "a b"})
    assert argv == ["sudo", "-E", "-u", hostile, "squeue", "-h", "-u", hostile, "-n", "a b", "-o", "%i"]


def test_a_template_naming_an_unknown_value_says_which() -> None:
    with pytest.raises(BatchError, match=r"spawner\.batch.*jobid"):
        command("scancel {jobid}", "", {"job_id": "1"})


def test_output_path_default_and_errors() -> None:
    values = {"homedir": "/home/alice", "job_name": "fh-x", "username": "alice"}
    assert fill(BatchSettings().output_path, values, "output_path") == "/home/alice/.fleethub-fh-x.log"
    with pytest.raises(BatchError, match=r"spawner\.batch\.output_path"):
        fill("{home}/x.log", values, "output_path")


def test_job_name_is_one_safe_token_per_spawn() -> None:
    spec = ServerSpec(user="Éva o'brien", server_name="gpu 1", spawn_id="0123456789abcdef" * 2, prefix="/",
                      env={})
    name = job_name(spec, BatchSettings().job_name_template)
    assert name == "fh-_C3_89va_20o_27brien-gpu_201-0123456789ab"
    assert all(c.isalnum() or c in "-_" for c in name)
    default = ServerSpec(user="bob", server_name="", spawn_id="f" * 32, prefix="/", env={})
    assert job_name(default, BatchSettings().job_name_template) == "fh-bob-_-ffffffffffff"


def test_default_script_for_slurm() -> None:
    script = render_script(config(req_partition="debug", req_runtime="1:00:00", req_options="--gres=gpu:1"),
                           VALUES)
    assert script.startswith("#!/bin/bash\n")
    lines = script.splitlines()
    for line in ("#SBATCH --job-name=fh-alice-_-0123456789ab", "#SBATCH --chdir=/home/alice",
                 "#SBATCH --output=/home/alice/.fleethub-fh-alice-_-0123456789ab.log", "#SBATCH --partition=debug",
                 "#SBATCH --time=1:00:00", "#SBATCH --gres=gpu:1", "exec /venv/bin/jupyterhub-singleuser --debug"):
        assert line in lines, script
    assert not [line for line in lines if line.startswith(("#SBATCH --mem", "#SBATCH --cpus"))]


def test_memory_and_cpus_default_from_the_limits() -> None:
    limited = SpawnerSettings.model_validate({"mem_limit": "1.5G", "cpu_limit": 1.2})
    assert requests(limited)["req_memory"] == "1536M" and requests(limited)["req_nprocs"] == "2"
    script = render_script(limited, VALUES)
    assert "#SBATCH --mem=1536M" in script and "#SBATCH --cpus-per-task=2" in script
    explicit = SpawnerSettings.model_validate({"mem_limit": "1G", "cpu_limit": 1, "batch": {"req_memory": "3G",
                                                                                           "req_nprocs": "4"}})
    assert requests(explicit)["req_memory"] == "3G" and requests(explicit)["req_nprocs"] == "4"


def test_a_value_with_a_line_break_never_reaches_a_script() -> None:
    with pytest.raises(BatchError, match="line break"):
        render_script(config(req_partition="debug\nrm -rf ~"), VALUES)
    with pytest.raises(BatchError, match="homedir"):
        render_script(config(), {**VALUES, "homedir": "/home/x\n#SBATCH --uid=0"})


def test_another_scheduler_by_configuration() -> None:
    pbs = config(script="#PBS -N {job_name}\n#PBS -q {req_partition}\ncd {homedir}\n{cmd}\n", req_partition="work")
    assert render_script(pbs, VALUES) == ("#PBS -N fh-alice-_-0123456789ab\n#PBS -q work\ncd /home/alice\n"
                                          "/venv/bin/jupyterhub-singleuser --debug\n")
    assert parse_job_id("1234.pbs-server\n", r"^(\S+)") == "1234.pbs-server"


def test_job_id_of_sbatch_parsable() -> None:
    pattern = BatchSettings().job_id_re
    assert parse_job_id("42\n", pattern) == "42"
    assert parse_job_id("42;cluster\n", pattern) == "42"
    assert parse_job_id("", pattern) is None


@pytest.mark.parametrize(("rc", "out", "err", "phase", "host"), [
    (0, "PENDING n/a\n", "", Phase.QUEUED, None),
    (0, "CONFIGURING n/a\n", "", Phase.QUEUED, None),
    (0, "RUNNING node17\n", "", Phase.RUNNING, "node17"),
    (0, "COMPLETING node17\n", "", Phase.RUNNING, "node17"),
    (0, "COMPLETED node17\n", "", Phase.ENDED, None),
    (0, "FAILED node17\n", "", Phase.ENDED, None),
    (0, "CANCELLED node17\n", "", Phase.ENDED, None),
    (0, "", "", Phase.ENDED, None),
    (1, "", "slurm_load_jobs error: Invalid job id specified\n", Phase.ENDED, None),
    (1, "", "slurm_load_jobs error: Unable to contact slurm controller (connect failure)\n", Phase.UNKNOWN, None),
    (1, "", "sudo: unable to resolve host\n", Phase.UNKNOWN, None),
])
def test_status_of_squeue(rc: int, out: str, err: str, phase: Phase, host: str | None) -> None:
    status = parse_status(SLURM, rc, out, err)
    assert (status.phase, status.host) == (phase, host)
    assert status.text


def test_wildcard_addresses() -> None:
    assert is_wildcard("0.0.0.0") and is_wildcard("::") and is_wildcard("")
    assert not is_wildcard("127.0.0.1") and not is_wildcard("10.1.2.3") and not is_wildcard("node1")


def test_env_keep_of_jobs_refuses_the_hubs_secrets() -> None:
    with pytest.raises(ValueError, match="secrets"):
        BatchSettings(env_keep=["SLURM_CONF", "FLEETHUB_DATABASE_URL"])


def test_scheduler_commands_get_slurm_conf_and_the_allow_list_only(monkeypatch: pytest.MonkeyPatch) -> None:
    from fleethub.services.spawner.backends.batch import BatchBackend
    from fleethub.shared.settings import load_settings

    monkeypatch.setenv("SLURM_CONF", "/etc/slurm-test/slurm.conf")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "canary")
    monkeypatch.setenv("LANG", "C.UTF-8")
    settings = load_settings(None, spawner={"backend": "batch", "batch": {"environment": {"SBATCH_ACCOUNT": "lab"}}})
    env = BatchBackend(settings)._sched_env(settings.spawner.batch)
    assert env["SLURM_CONF"] == "/etc/slurm-test/slurm.conf" and env["SBATCH_ACCOUNT"] == "lab"
    assert env["LANG"] == "C.UTF-8"  # spawner.env_keep
    assert "AWS_SECRET_ACCESS_KEY" not in env and not [k for k in env if k.startswith("FLEETHUB_")]


def test_the_proxy_target_is_the_listen_address_or_the_jobs_node() -> None:
    from fleethub.services.spawner.backends.batch import BatchBackend
    from fleethub.shared.settings import load_settings

    backend = BatchBackend(load_settings(None))
    assert backend.target({"ip": "127.0.0.1", "port": 40000, "host": "node17"}) == "http://127.0.0.1:40000"
    assert backend.target({"ip": "0.0.0.0", "port": 40000, "host": "node17"}) == "http://node17:40000"
    with pytest.raises(BatchError, match="no host yet"):
        backend.target({"ip": "0.0.0.0", "port": 40000, "job_id": "7"})


@pytest.mark.parametrize(("user", "why"), [
    ("root", "uid 0"),  # a hub user named as the superuser: `sudo -u root sbatch` would run the job as root
    ("#0", "not a valid Unix account name"),  # sudo's `-u #uid` syntax: uid 0 again
    ("-x", "not a valid Unix account name"),
    ("daemon", "outside spawner.system_user.uid_range"),  # a system account (uid 1), as a hub user's name
])
async def test_a_job_never_runs_as_root_or_as_a_sudo_uid(user: str, why: str) -> None:
    from fleethub.services.spawner.backends.batch import BatchBackend, BatchError
    from fleethub.shared.settings import load_settings

    settings = load_settings(None)
    # the submit command would succeed: only the account check stands between the user and a root job
    config = settings.spawner.model_copy(update={"batch": settings.spawner.batch.model_copy(
        update={"submit_cmd": "true", "exec_prefix": "env FH_AS={username}"})})
    spec = ServerSpec(user=user, server_name="", spawn_id="s" * 20, prefix="/user/x/", env={}, config=config)
    backend = BatchBackend(settings)
    with pytest.raises(BatchError, match=why):  # a bad name already in the identity (a stop's commands use it)
        await backend.start(spec, backend.identity(spec))


def test_any_hub_name_when_jobs_run_as_the_worker() -> None:
    from fleethub.services.spawner.backends.batch import unix_account

    assert unix_account(config(exec_prefix=""), "a@b.example") == "a@b.example"
