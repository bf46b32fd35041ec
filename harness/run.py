"""One run: cluster up, storm with faults, redelivery, settle, final read, checks.

Every phase writes to the run folder as it goes, so a run stopped at any
point (Ctrl-C, a crash, a killed harness) leaves a history that
``harness check`` can still read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import platform
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import docker
import docker.errors
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

import harness
from harness.checkers import check_all
from harness.checkers.online import OnlineChecker
from harness.checkers.verdict import Verdict
from harness.client import CoordinatorClient
from harness.errors import HarnessError, InfrastructureError
from harness.final_state import read_batches, read_completions, read_store_rows
from harness.history import HistoryWriter, Operation, load_history
from harness.metrics import HarnessMetrics
from harness.nemesis import FaultContext, preflight, start_faults
from harness.observe import Observation, ObserveOptions
from harness.report.counterexample import attach_counterexamples
from harness.report.results import (
    EXIT_INTERRUPTED,
    exit_code_for,
    expectation_outcome,
    percentiles,
    print_verdicts,
    write_results,
)
from harness.scenario import Scenario
from harness.topology.docker_cluster import ClusterSpec, DockerCluster
from harness.workload import Storm, plan_batches, plan_storm

log = logging.getLogger(__name__)

REGISTER_ATTEMPTS = 20
REDELIVERY_DEADLINE_S = 60.0


@dataclass
class RunOutcome:
    run_dir: Path
    exit_code: int
    verdicts: list[Verdict]
    results: dict[str, Any] = field(default_factory=dict)


def new_run_id(scenario: Scenario) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return f"{scenario.name}-{stamp}-{secrets.token_hex(2)}"


def run_summary(results: dict[str, Any]) -> str:
    """Summarises the operations and faults of a run in one console line."""
    counts = results.get("counts", {})
    by_type: dict[str, int] = {}
    for key, count in counts.items():
        completion_type = key.split(":", 1)[1]
        by_type[completion_type] = by_type.get(completion_type, 0) + count
    faults = results.get("faults", {})
    fault_text = ", ".join(f"{kind} x{count}" for kind, count in faults.items())
    return (
        f"operations: {sum(counts.values())} "
        f"(ok {by_type.get('ok', 0)}, fail {by_type.get('fail', 0)}, "
        f"info {by_type.get('info', 0)}); "
        f"faults: {fault_text or 'none'} "
        "(watch-conflict counts injected conflicts)"
    )


def check_docker() -> docker.DockerClient:
    """Connects to the Docker Engine or raises with what to do."""
    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except docker.errors.DockerException as err:
        raise InfrastructureError(
            f"Docker is unreachable ({err}); start the Docker daemon, or set "
            "DOCKER_HOST to a reachable engine, then run again"
        ) from err
    return client


class Run:
    """The state of one run while it executes."""

    def __init__(
        self,
        scenario: Scenario,
        run_dir: Path,
        run_id: str,
        cluster: DockerCluster,
        console: Console,
        versions: dict[str, Any],
    ) -> None:
        self.scenario = scenario
        self.run_dir = run_dir
        self.run_id = run_id
        self.cluster = cluster
        self.console = console
        self.versions = versions
        self.metrics = HarnessMetrics()
        self.metrics.describe_run(
            run_id, scenario.name, scenario.strategy, scenario.seed, scenario.settle_s
        )
        self.online = OnlineChecker()
        self.online_reported = 0
        # Seconds from the run's start to the first violation the online
        # checks saw: how soon a bug shows, for the zoo's time to detection.
        self.first_violation_s: float | None = None
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}
        self.fault_counts: dict[str, int] = {}
        self.history = HistoryWriter(
            run_dir / "history.jsonl",
            {
                "run_id": run_id,
                "seed": scenario.seed,
                "scenario": scenario.model_dump(mode="json"),
                "versions": versions,
                "started_at": datetime.now(UTC).isoformat(),
            },
        )

    def on_completion(self, op: Operation, latency_ms: float) -> None:
        self.metrics.observe(op, latency_ms)
        for message in self.online.observe(op):
            if self.first_violation_s is None:
                self.first_violation_s = time.monotonic() - self.started
            invariant = message.split(":", 1)[0]
            self.metrics.violations.labels(invariant).inc()
            if self.online_reported < 5:
                self.console.print(f"[red]online check:[/red] {message}")
            self.online_reported += 1

    async def execute(self) -> dict[str, Any]:
        scenario = self.scenario
        plan = plan_storm(scenario, plan_batches(scenario, self.run_id))
        instances = self.cluster.instance_names

        def instance_url(name: str) -> str | None:
            member = self.cluster.members.get(name)
            if member is None or member.host_port is None:
                return None
            return f"http://127.0.0.1:{member.host_port}"

        async with CoordinatorClient(
            self.history, instance_url, scenario.request_timeout_s, self.on_completion
        ) as client:
            # Register every batch; a register is idempotent, so retry until ok.
            started = time.monotonic()
            await self._register(client, plan.batches, instances)
            self.phases["register_s"] = time.monotonic() - started

            # The storm, with faults scheduled against it.
            started = time.monotonic()
            storm = Storm(
                plan,
                client,
                instances,
                scenario.duplicates,
                scenario.seed,
                spread_ms=scenario.spread_ms,
            )
            await self._storm_with_faults(storm, plan)
            self.phases["storm_s"] = time.monotonic() - started

            # Redelivery of every event with no definite reply.
            started = time.monotonic()
            unhandled = await storm.redeliver(REDELIVERY_DEADLINE_S)
            self.phases["redelivery_s"] = time.monotonic() - started
            if unhandled:
                self.console.print(
                    f"[yellow]{unhandled} events had no definite answer after "
                    "redelivery[/yellow]"
                )

            # Settle, then read the final state.
            started = time.monotonic()
            batch_ids = [batch.batch_id for batch in plan.batches]
            await self._settle(batch_ids)
            self.phases["settle_s"] = time.monotonic() - started
            final_state = await self._read_final_state(client, instances, batch_ids)

        return {
            "final_state": final_state,
            "counts": client.stats.counts,
            "latency_ms": {
                f: percentiles(samples)
                for f, samples in client.stats.latencies_ms.items()
            },
            "firings": len(plan.firings),
            "storm_planned_s": round(plan.duration_s, 2),
            "redelivery_unhandled": unhandled,
        }

    async def _register(self, client, batches, instances) -> None:
        for number, batch in enumerate(batches):
            value = {"batch_id": batch.batch_id, "slot_ids": batch.slot_ids}
            body = {"batch_id": batch.batch_id, "slot_ids": batch.slot_ids}
            for attempt in range(REGISTER_ATTEMPTS):
                instance = instances[(number + attempt) % len(instances)]
                op, _ = await client.call(
                    "register", instance, "POST", "/batches", value, body
                )
                if op.type == "ok":
                    break
                await asyncio.sleep(0.2)
            else:
                raise InfrastructureError(
                    f"batch {batch.batch_id} could not be registered in "
                    f"{REGISTER_ATTEMPTS} attempts (last reply: {op.value}); see the "
                    "coordinator logs in the run folder"
                )

    async def _storm_with_faults(self, storm: Storm, plan) -> None:
        ctx = FaultContext(
            cluster=self.cluster,
            history=self.history,
            storm_start=time.monotonic(),
            storm_duration_s=plan.duration_s,
            batch_ids=[batch.batch_id for batch in plan.batches],
            on_window=self.metrics.fault_window,
        )
        fault_tasks = start_faults(self.scenario.faults, ctx, self.scenario.seed)
        # The firing after which every event of a batch went out at least once;
        # later firings of its events are redeliveries.
        batch_done_at = _batch_sent_firings(plan)
        progress = Progress(
            TextColumn("storm"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            transient=False,
        )
        with progress:
            task = progress.add_task("storm", total=len(plan.firings), status="")

            def on_firing(fired: int) -> None:
                if fired in batch_done_at:
                    self.metrics.batch_fired(*batch_done_at[fired])
                active = ", ".join(f"{k}" for k, n in ctx.active.items() if n > 0)
                violations = sum(self.online.violations.values())
                status = f"faults: {active or 'none'}  online violations: {violations}"
                progress.update(task, completed=fired, status=status)

            storm.on_firing = on_firing
            storm.on_new_event = ctx.deliveries.announce
            try:
                await storm.run()
            except BaseException:
                # Interrupted: stop the faults now rather than at the storm's end.
                for fault_task in fault_tasks:
                    fault_task.cancel()
                raise
            finally:
                # Heal: every fault ends and every instance is back before redelivery.
                results = await asyncio.gather(*fault_tasks, return_exceptions=True)
        for fault, result in zip(self.scenario.faults, results, strict=True):
            if isinstance(result, BaseException):
                raise InfrastructureError(
                    f"fault {fault.kind} failed to run: {result!r}"
                ) from result
            self.fault_counts[fault.kind] = (
                self.fault_counts.get(fault.kind, 0) + result
            )

    async def _settle(self, batch_ids: list[str]) -> None:
        """Waits until every batch has a completion entry, or settle_s passes."""
        deadline = time.monotonic() + self.scenario.settle_s
        self.metrics.settle_started(self.scenario.settle_s)
        wanted = set(batch_ids)
        while time.monotonic() < deadline:
            try:
                completions = await read_completions(self.cluster.redis_url())
            except OSError:
                completions = []
            if wanted <= {entry["batch_id"] for entry in completions}:
                return
            await asyncio.sleep(0.5)

    async def _read_final_state(self, client, instances, batch_ids) -> dict[str, Any]:
        final_state: dict[str, Any] = {
            "batches": await read_batches(client, instances, batch_ids),
            "completions": await read_completions(self.cluster.redis_url()),
        }
        rows, reason = await read_store_rows(self.cluster.postgres_dsn(), batch_ids)
        if rows is not None:
            final_state["store_rows"] = rows
        else:
            final_state["store_rows_unreadable"] = reason
        # Written to a temporary file and renamed, so a harness killed while
        # writing leaves no final state rather than a torn one.
        path = self.run_dir / "final_state.json"
        temporary = path.with_suffix(".json.tmp")
        temporary.write_text(json.dumps(final_state, indent=1, sort_keys=True) + "\n")
        temporary.replace(path)
        return final_state


def _batch_sent_firings(plan) -> dict[int, tuple[str, int]]:
    """Map the firing number that completes each batch's events to the batch.

    The value is the batch id and its number of distinct events.
    """
    events = {batch.batch_id: len(batch.events) for batch in plan.batches}
    unsent = dict(events)
    seen: set = set()
    done_at: dict[int, tuple[str, int]] = {}
    for number, event in enumerate(plan.firings, 1):
        if event in seen:
            continue
        seen.add(event)
        unsent[event.batch_id] -= 1
        if unsent[event.batch_id] == 0:
            done_at[number] = (event.batch_id, events[event.batch_id])
    return done_at


def _observation(
    options: ObserveOptions | None, run: Run, console: Console
) -> Observation:
    def coordinator_ports() -> dict[str, int | None]:
        members = run.cluster.members
        return {
            name: members[name].host_port if name in members else None
            for name in run.cluster.instance_names
        }

    return Observation(
        options or ObserveOptions(),
        run.metrics,
        coordinator_ports,
        run.run_id,
        run.run_dir,
        lambda line: console.print(line, highlight=False),
    )


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 2)


async def start_cluster(cluster: DockerCluster, console: Console) -> None:
    """Starts the cluster in a thread; on cancellation, stops it starting more.

    A thread cannot be cancelled, so an interrupted start sets the cluster's
    abort flag and waits for the thread to notice, so that teardown does not
    race a container still being created.
    """
    starting = asyncio.get_running_loop().run_in_executor(
        None, cluster.start, lambda msg: console.print(msg)
    )
    try:
        await asyncio.shield(starting)
    except asyncio.CancelledError:
        cluster.abort.set()
        await asyncio.wait([starting])
        # The aborted start usually fails; reading its error here keeps asyncio
        # from printing it as "Future exception was never retrieved".
        if not starting.cancelled() and starting.exception() is not None:
            log.debug(
                "cluster start ended after the interrupt: %r", starting.exception()
            )
        raise


def load_final_state(path: Path) -> dict[str, Any] | None:
    """Reads final_state.json; None when the run ended before writing it.

    The run writes the file atomically, so a damaged one was changed by hand
    or by another program: that is bad input, not a verdict on the coordinator.
    """
    if not path.exists():
        return None
    try:
        final_state = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise HarnessError(
            f"{path} is not valid JSON ({err}); restore it from the run, or delete "
            "it to check the history alone"
        ) from err
    if not isinstance(final_state, dict):
        raise HarnessError(
            f"{path} contains a JSON {type(final_state).__name__}, expected an object "
            "with 'batches' and 'completions'; delete it to check the history alone"
        )
    return final_state


def check_run_dir(run_dir: Path) -> tuple[list[Verdict], dict[str, Any]]:
    """Checks a saved run folder; the final state may be missing."""
    history = load_history(run_dir / "history.jsonl")
    final_state = load_final_state(run_dir / "final_state.json")
    verdicts = attach_counterexamples(history, check_all(history, final_state))
    return verdicts, history.header


def versions(runtime_image: str, coordinator_image: str | None) -> dict[str, Any]:
    return {
        "harness": harness.__version__,
        "python": platform.python_version(),
        "runtime_image": runtime_image,
        "coordinator_image": coordinator_image or runtime_image,
    }


async def execute_run(
    scenario: Scenario,
    reports_dir: Path,
    console: Console,
    runtime_image: str,
    coordinator_image: str | None = None,
    cluster: DockerCluster | None = None,
    scenario_text: str | None = None,
    observe: ObserveOptions | None = None,
) -> RunOutcome:
    """Runs one scenario end to end and writes its run folder.

    With ``cluster`` given (tests share one per session), the run uses it after
    a state reset and leaves it running. Otherwise it starts its own cluster and
    removes it at the end, on error and on Ctrl-C alike.
    """
    # Before anything is created: a fault this machine cannot make is bad input.
    preflight(scenario.faults)
    run_id = new_run_id(scenario)
    run_dir = reports_dir / run_id
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except OSError as err:
        raise HarnessError(
            f"cannot create the run folder {run_dir}: {err.strerror}; pass a "
            "writable folder with --reports"
        ) from err
    (run_dir / "scenario.yaml").write_text(
        scenario_text
        or yaml.safe_dump(scenario.model_dump(mode="json"), sort_keys=False)
    )
    console.print(
        f"run [bold]{run_id}[/bold]: strategy {scenario.strategy}, "
        f"{scenario.instances} instances, seed {scenario.seed}"
    )
    console.print(f"replay with: harness run {run_dir / 'scenario.yaml'}")

    owns_cluster = cluster is None
    started = time.monotonic()
    # docker-py sends `since` in whole seconds; a second's margin keeps
    # the first lines of this run.
    run_started_at = datetime.now(UTC) - timedelta(seconds=1)
    results: dict[str, Any] = {
        "run_id": run_id,
        "status": "started",
        "seed": scenario.seed,
        "strategy": scenario.strategy,
        "scenario": scenario.model_dump(mode="json"),
        "versions": versions(runtime_image, coordinator_image),
    }
    run: Run | None = None
    observation: Observation | None = None
    try:
        if owns_cluster:
            cluster = DockerCluster(
                ClusterSpec(
                    run_id=run_id,
                    runtime_image=runtime_image,
                    instances=scenario.instances,
                    strategy=scenario.strategy,
                    redis_persistence=scenario.redis_persistence,
                    coordinator_image=coordinator_image,
                )
            )
            await start_cluster(cluster, console)
        else:
            if (cluster.spec.strategy, cluster.spec.instances) != (
                scenario.strategy,
                scenario.instances,
            ):
                await asyncio.to_thread(
                    cluster.replace_instances, scenario.strategy, scenario.instances
                )
            await asyncio.to_thread(cluster.reset_state)
        results["phases"] = {"cluster_up_s": round(time.monotonic() - started, 2)}

        run = Run(scenario, run_dir, run_id, cluster, console, results["versions"])
        run.started = started
        observation = _observation(observe, run, console)
        await asyncio.to_thread(observation.start)
        outcome = await run.execute()
        run.history.close()
        alerts = await asyncio.to_thread(observation.finish)
        if alerts is not None:
            results["alerts"] = alerts

        verdicts, _ = check_run_dir(run_dir)
        expect = scenario.expect.model_dump()
        met, misses = expectation_outcome(verdicts, expect)
        exit_code = exit_code_for(verdicts, expect)
        results.update(
            status="completed",
            verdicts=[v.to_json() for v in verdicts],
            counts=outcome["counts"],
            latency_ms=outcome["latency_ms"],
            firings=outcome["firings"],
            storm_planned_s=outcome["storm_planned_s"],
            redelivery_unhandled=outcome["redelivery_unhandled"],
            faults=run.fault_counts,
            online_violations=dict(run.online.violations),
            first_online_violation_s=_rounded(run.first_violation_s),
            verdicts_known_s=round(time.monotonic() - started, 2),
            expect={**expect, "met": met, "misses": misses},
            exit_code=exit_code,
        )
        results["phases"].update({k: round(v, 2) for k, v in run.phases.items()})
        console.print(run_summary(results), highlight=False)
        print_verdicts(console, verdicts, f"verdicts of {run_id}")
        for miss in misses:
            console.print(f"[red]expectation not met:[/red] {miss}")
        return RunOutcome(run_dir, exit_code, verdicts, results)
    except (KeyboardInterrupt, asyncio.CancelledError):
        results.update(status="interrupted", exit_code=EXIT_INTERRUPTED)
        if cluster is not None:
            # Readiness probes still running in threads (a restart after a
            # kill) stop now instead of polling removed containers.
            cluster.abort.set()
        raise
    except BaseException as err:
        results.update(status="error", error=str(err))
        raise
    finally:
        results["duration_s"] = round(time.monotonic() - started, 2)
        if observation is not None:
            if observation.prometheus is not None and "alerts" not in results:
                # Observed, but ended before the alerts were read.
                results["alerts"] = None
            await asyncio.shield(asyncio.to_thread(observation.stop))
        if run is not None:
            run.history.close()
            run.metrics.save(run_dir / "metrics.prom")
        if cluster is not None:
            try:
                await asyncio.shield(
                    asyncio.to_thread(
                        cluster.save_logs,
                        run_dir / "logs",
                        None if owns_cluster else run_started_at,
                    )
                )
            except Exception as err:  # noqa: BLE001 - logs are best effort
                log.warning("could not save container logs: %s", err)
            if owns_cluster:
                await asyncio.shield(asyncio.to_thread(cluster.teardown))
        write_results(run_dir / "results.json", results)
