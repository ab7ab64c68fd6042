"""Scheduled benchmark runs on a real Prefect server: start the server, deploy the flow on a cron schedule.

No scheduler of our own. The Prefect server's scheduler turns the deployment's cron schedule into
flow runs; they are executed either by the `prunebench deploy` process itself (a Prefect Runner,
what `flow.serve` starts) or by the workers of a process work pool, one per GPU machine.

Only the standard library is imported at module level: the CLI builds its parser from this file
before any environment is configured, and Prefect must not be imported before that.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pruning.errors import ConfigError, PrunebenchError

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.deployments.runner import RunnerDeployment
    from prefect.schedules import Schedule

    from flows.config import ExperimentConfig

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200
FLOW_NAME = "benchmark"  # the name given to @flow in flows/benchmark.py; deployments are "benchmark/<name>"
SERVER_STARTUP_TIMEOUT_S = 180.0  # the server starts in ~10 s on two busy cores; migrations of a new database take longer


def server_urls(host: str, port: int) -> tuple[str, str]:
    """(UI URL, PREFECT_API_URL) of a server bound to host:port, as another machine or a browser reaches it."""
    if host in ("0.0.0.0", "::", ""):  # bound to every interface: name this machine instead
        host = socket.getfqdn()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    ui_url = f"http://{host}:{port}"
    return ui_url, f"{ui_url}/api"


def ui_url_of(api_url: str) -> str:
    """The UI of a local Prefect server is served at its API URL without the trailing /api."""
    return api_url.rstrip("/").removesuffix("/api")


def resolve_api_url(api_url: str | None) -> str:
    """--api-url, else $PREFECT_API_URL, else the URL `prunebench server` uses by default."""
    return (api_url or os.environ.get("PREFECT_API_URL") or server_urls(DEFAULT_HOST, DEFAULT_PORT)[1]).rstrip("/")


def server_is_up(api_url: str, timeout_s: float = 2.0) -> bool:
    """True when the Prefect API at `api_url` answers its health endpoint."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def require_server(api_url: str) -> None:
    if not server_is_up(api_url):
        raise PrunebenchError(
            f"no Prefect server answers at {api_url}: start one with `prunebench server` (it prints its "
            "PREFECT_API_URL), or point --api-url / PREFECT_API_URL at a running one"
        )


def wait_for_server(api_url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll the health endpoint until it answers; fail when `timeout_s` passes or `process` exits first."""
    deadline = time.monotonic() + timeout_s
    while not server_is_up(api_url):
        if process is not None and process.poll() is not None:
            raise PrunebenchError(
                f"the Prefect server exited with status {process.returncode} before answering at {api_url} "
                "(its own message is above; a port already in use is the usual cause: try --port)"
            )
        if time.monotonic() > deadline:
            raise PrunebenchError(f"the Prefect server did not answer at {api_url} within {timeout_s:.0f} s")
        time.sleep(0.5)


# How Prefect runs a temporary server of its own: the API only, in ephemeral mode.
TEMPORARY_API_ENVIRONMENT = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}


def api_command(host: str, port: int) -> list[str]:
    """The Prefect API alone (no UI), served by uvicorn from this interpreter's environment: a run's temporary server."""
    return [sys.executable, "-m", "uvicorn", "--factory", "prefect.server.api.server:create_app",
            "--host", host, "--port", str(port), "--log-level", "error", "--lifespan", "on"]  # fmt: skip


def server_command(host: str, port: int) -> list[str]:
    """`prefect server start` from this interpreter's environment (the project's venv)."""
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


# Sets the parent-death signal (Linux: SIGTERM once the process that started it is gone, SIGKILL
# included), exits if that happened already, then becomes the command. Where prctl is missing the
# command still runs; only the SIGKILL case is then left to the user.
_TIED_TO_PARENT = """
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def tied_to_parent(command: list[str]) -> list[str]:
    """`command`, started so that it dies with this process however this process dies (a Prefect
    server must not outlive the run or the `prunebench server` that started it)."""
    return [sys.executable, "-c", _TIED_TO_PARENT, str(os.getpid()), *command]


def port_in_use(host: str, port: int) -> bool:
    """True when something on this machine already listens on host:port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


@contextmanager
def run_api() -> Iterator[str]:
    """The Prefect API a `prunebench run` or `sweep` talks to, for the duration of the block.

    $PREFECT_API_URL when set (a server of the user's). Otherwise a temporary server of this run's own,
    as Prefect would start one, but tied to this process: SIGTERM (what `timeout`, systemd and `docker
    stop` send) and Ctrl-C stop the run cleanly, its flow run is marked crashed, and the server is
    stopped; after a SIGKILL the server gets SIGTERM from the kernel. Yields the API URL."""
    configured = os.environ.get("PREFECT_API_URL")
    with _stop_signals_raise_interrupt():
        if configured:
            yield configured
            return
        from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

        host, port = "127.0.0.1", free_port()
        api_url = server_urls(host, port)[1]
        environment = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True), **TEMPORARY_API_ENVIRONMENT}
        process = subprocess.Popen(tied_to_parent(api_command(host, port)), env=environment)
        try:
            wait_for_server(api_url, float(environment.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", SERVER_STARTUP_TIMEOUT_S)), process)
            os.environ["PREFECT_API_URL"] = api_url  # for processes started from here (Dask workers)
            with temporary_settings({PREFECT_API_URL: api_url}):
                yield api_url
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            _drain_into_api()
            stop_process(process, grace_s=10)


def _drain_into_api() -> None:
    """Send the logs and events Prefect still holds to the API before it stops (else they are retried,
    and reported lost, at exit)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=5)


def mark_dead_runs_crashed(flow_name: str) -> int:
    """Flow runs of `flow_name` that a process of this machine left `Running` when it died (SIGKILL, a
    power cut) stay so in the UI for good: mark them Crashed. A run is known by the tags `tag_with_process`
    gives it; one whose process still lives is left alone. Returns how many were marked."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType, FlowRunFilterTags
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    host = f"host:{socket.gethostname()}"
    marked = 0
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING])),
                                          tags=FlowRunFilterTags(all_=[host])),
        )  # fmt: skip
        for run in runs:
            pids = [int(tag.removeprefix("pid:")) for tag in run.tags if tag.startswith("pid:") and tag[4:].isdigit()]
            if pids and not _alive(pids[0]):
                client.set_flow_run_state(run.id, Crashed(message=f"process {pids[0]} on {host[5:]} died while the run was Running"), force=True)
                print(f"prunebench: flow run {run.name} was left Running by process {pids[0]}, which is gone: marked Crashed",
                      file=sys.stderr, flush=True)  # fmt: skip
                marked += 1
    return marked


def tag_with_process() -> None:
    """Tag the current flow run with this machine and process (`host:NAME`, `pid:N`), so that a later run
    can tell whether the process behind a flow run left `Running` still lives. The flow run only: its
    task runs keep their own tags (`model:`, `method:`)."""
    from prefect import get_client
    from prefect.runtime import flow_run

    if flow_run.get_id() is None:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.get_id(), tags=[*flow_run.get_tags(), f"host:{socket.gethostname()}", f"pid:{os.getpid()}"])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def run_server(host: str, port: int) -> int:
    """Run a Prefect server with its UI in the foreground until Ctrl-C or SIGTERM; return its exit status.

    The caller has configured the environment: PREFECT_HOME decides where the server's database
    (runs, deployments, schedules) lives.
    """
    ui_url, api_url = server_urls(host, port)
    loopback = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)  # where this machine reaches it
    local_api_url = server_urls(loopback, port)[1]
    environment = {
        **os.environ,
        # The UI asks /ui-settings where its API is; by default Prefect answers with PREFECT_API_URL
        # or the *settings'* host and port (4200), not the --port given here. Tell it.
        "PREFECT_UI_API_URL": os.environ.get("PREFECT_UI_API_URL", api_url),
        "PREFECT_CLI_PROMPT": "false",  # `prefect server start` otherwise offers to edit the user's profile
    }
    if port_in_use(loopback if host in ("0.0.0.0", "", "::") else host, port):
        answering = " (a Prefect server answers there)" if server_is_up(local_api_url) else ""
        raise PrunebenchError(f"port {port} on {host} is in use{answering}: stop what listens there, or choose another with --port")
    # A session of its own, so that Ctrl-C reaches it once, forwarded by us, and not twice
    # (uvicorn takes a second SIGINT as "exit now, skip the clean shutdown"); tied to this process, so
    # that it stops when this one is killed, even with SIGKILL.
    process = subprocess.Popen(tied_to_parent(server_command(host, port)), env=environment, start_new_session=True)
    with _stop_signals_raise_interrupt():
        try:
            wait_for_server(local_api_url, SERVER_STARTUP_TIMEOUT_S, process)
            print(f"\nPrefect UI:       {ui_url}", flush=True)
            print(f"PREFECT_API_URL:  {api_url}", flush=True)
            print(f"  export PREFECT_API_URL={api_url}   # then prunebench run / deploy use this server", flush=True)
            print(f"Prefect home:     {os.environ.get('PREFECT_HOME')}   (Ctrl-C stops the server)", flush=True)
            return process.wait()
        except KeyboardInterrupt:
            print("\nstopping the Prefect server ...", file=sys.stderr, flush=True)
            stop_process(process)
            return 0
        finally:
            if process.poll() is None:
                stop_process(process)


def stop_process(process: subprocess.Popen, grace_s: float = 30.0) -> int | None:
    """SIGINT (Ctrl-C: Prefect shuts down cleanly), then SIGTERM, then SIGKILL, each wait bounded."""
    for stop_signal, wait_s in ((signal.SIGINT, grace_s), (signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        if process.poll() is not None:
            break
        process.send_signal(stop_signal)
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return process.returncode


STOPPED_BY: list[int] = []  # the stop signals received (what a failure while stopping is blamed on)


@contextmanager
def _stop_signals_raise_interrupt() -> Iterator[None]:
    """Let `kill PID` stop the server as cleanly as Ctrl-C does, and Ctrl-C work even where the shell
    started us with SIGINT ignored (a background job of a script)."""

    def interrupt(signum, frame):
        STOPPED_BY.append(signum)
        raise KeyboardInterrupt

    previous = {stop_signal: signal.signal(stop_signal, interrupt) for stop_signal in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for stop_signal, handler in previous.items():
            signal.signal(stop_signal, handler)


def cron_schedule(cron: str, timezone: str = "UTC") -> Schedule:
    """A validated Prefect cron schedule; a bad expression or timezone fails here, before any server is contacted."""
    from pydantic import ValidationError
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.schedules import Cron

    try:
        CronSchedule(cron=cron, timezone=timezone)  # the server's own validation, run locally
    except ValidationError as err:
        problem = err.errors(include_url=False)[0]
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"] and problem["loc"][0] == "timezone":
            raise ConfigError(f"--timezone {timezone!r}: {message}") from None
        raise ConfigError(
            f"--cron {cron!r}: {message}; expected five fields, minute hour day-of-month month day-of-week, "
            "e.g. '0 3 * * *' (every day at 03:00)"
        ) from None
    return Cron(cron, timezone=timezone)


def benchmark_parameters(config_path: Path, config: ExperimentConfig) -> dict[str, str]:
    """The benchmark flow's parameters, as absolute paths: runs start in another process and directory."""
    return {
        "config_path": str(Path(config_path).resolve()),
        "database": str(config.output.database.resolve()),
        "workdir": str(config.output.workdir.resolve()),
    }


def benchmark_deployment(
    config_path: Path, config: ExperimentConfig, schedule: Schedule, name: str, pool: str | None = None
) -> RunnerDeployment:
    """A deployment of the benchmark flow with `schedule` and the config's paths as parameters.

    The entrypoint is the module path `flows.benchmark.benchmark`: whoever runs it (this process
    serving it, or a worker) imports the flow from its own installed prunebench, so no code is
    copied or stored anywhere. With `pool`, the flow-run processes the worker starts get the
    environment `prunebench run` would set for this workdir (hubs offline, results persisted).
    """
    from prefect.types.entrypoint import EntrypointType

    from flows.benchmark import benchmark

    try:
        return benchmark.to_deployment(
            name=name,
            schedule=schedule,
            parameters=benchmark_parameters(config_path, config),
            entrypoint_type=EntrypointType.MODULE_PATH,
            tags=["prunebench", f"config:{config.name}"],
            description=f"prunebench benchmark of {Path(config_path).resolve()}",
            work_pool_name=pool,
            job_variables={"env": flow_run_environment(config.output.workdir)} if pool else None,
        )
    except ValueError as err:  # a name with characters Prefect refuses ('/', '%', '&', '<', '>')
        raise ConfigError(f"--name {name!r}: {err}") from None


def flow_run_environment(workdir: Path) -> dict[str, str]:
    """What `configure_environment(workdir)` sets, as a dict for a work pool's job variables.

    Read off a cleared environment so the list of variables stays in one place (flows/runtime.py).
    PREFECT_HOME is left out: a worker machine keeps its own Prefect home and profile.
    """
    from unittest import mock

    from flows.runtime import configure_environment

    with mock.patch.dict(os.environ, clear=True):
        configure_environment(workdir)
        environment = dict(os.environ)
    environment.pop("PREFECT_HOME", None)
    return environment


def require_process_pool(pool: str) -> None:
    """Fail before anything loads unless the server has a process work pool named `pool`."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            work_pool = client.read_work_pool(pool)
        except ObjectNotFound:
            raise PrunebenchError(
                f"no work pool {pool!r} on this server: create it with `prefect work-pool create {pool} --type process`"
            ) from None
    if work_pool.type != "process":
        # The deployment carries neither an image nor stored code: only a process worker, started
        # from an environment where prunebench is installed, can import the flow.
        raise PrunebenchError(f"work pool {pool!r} is of type {work_pool.type!r}; prunebench deploys to process pools only")


def register(deployment: RunnerDeployment) -> UUID:
    """Create or update the deployment (in its work pool, if it names one); its new schedule replaces the old."""
    return deployment.apply()


def serve(deployment: RunnerDeployment) -> None:
    """Register the deployment and run its scheduled runs in this process until Ctrl-C.

    One run at a time (limit=1): a benchmark takes the whole GPU. On Ctrl-C, Prefect pauses the
    schedule, so runs do not pile up while nothing serves them; serving again resumes it.
    """
    from prefect import serve as prefect_serve

    prefect_serve(deployment, limit=1)
