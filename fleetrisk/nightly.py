"""One night across MPI ranks: prepare, score the lanes, reduce, report, publish.

Rank 0 prepares the night (``prepare``) and scatters each lane's shards to
the ranks with buffer-based ``Scatterv``; every rank scores its shards with
the Numba kernel and checkpoints them (``score``); the results come back to
rank 0 with ``Gatherv``. After the priority lane rank 0 publishes the
priority leads, so a failure later still delivers the urgent ones. After
the standard lane rank 0 merges the scores; the dealer folders are rendered
by all ranks, each taking every size-th dealer; rank 0 writes the rest,
publishes atomically and only then commits the state.

Exit statuses: 0 success; 2 invalid arguments or config; 3 paused on the
input error rate (rerun with ``--accept-error-rate``); 4 published on
fallback data (degraded); 75 stopped by a signal after checkpointing (rerun
or requeue to resume); 1 failure.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import logging
import os
import resource
import signal
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from mpi4py import MPI

from . import checkpoint, comm as commlib, deadlines, monitor, outputs, partition
from .checkpoint import ShardResults
from .comm import WHERE
from .config import ConfigError, ModelConfig, load
from .dataset import write_scores_dataset
from .faults import Injector
from .lake import Lake, SourceError
from .prepare import NightError, Prepared, checkpoint_folder, prepare
from .publish import S3PublishError, Staging, upload_s3
from .registry import day_number
from .report.salesforce import write_salesforce_csv
from .report.summary import write_summary
from .score import RankWork, score_work
from .state import Generation, ScoreStore, StateDir, write_text_atomic

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PAUSED = 3
EXIT_DEGRADED = 4
EXIT_INTERRUPTED = 75


@dataclasses.dataclass
class Options:
    """The arguments of ``fleetrisk nightly``."""

    lake: str
    state: Path
    out: Path
    night: dt.date
    config: Path | None = None
    full: bool = False
    resume: bool = True
    accept_error_rate: bool = False
    publish: str | None = None
    alert_command: list[str] | None = None
    sns_topic_arn: str | None = None


class StageTimer:
    """Wall time per stage, for the summary, metrics and logs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        # Peak RSS of this process at the end of each stage: the first stage
        # whose figure jumps is the one that set the peak.
        self.peak_rss: dict[str, int] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        WHERE.stage = stage
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_rss[stage] = max(self.peak_rss.get(stage, 0), peak)
            log.info("stage %s took %.2f s; peak RSS so far %.0f MiB", stage, elapsed, peak / 2**20)


def _install_stop_handlers(stop: threading.Event) -> None:
    def request_stop(signum: int, _frame: object) -> None:
        log.warning("received %s: checkpointing and stopping", signal.Signals(signum).name)
        stop.set()

    for name in ("SIGUSR1", "SIGTERM"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), request_stop)


def run(options: Options) -> int:
    """Run one night on every rank of ``COMM_WORLD``; return the exit status."""
    comm = commlib.world()
    stop = threading.Event()
    _install_stop_handlers(stop)
    with commlib.abort_on_failure(comm):
        return _run(options, comm, stop)
    return EXIT_FAILED  # not reached: abort_on_failure raises


def _run(options: Options, comm: MPI.Intracomm, stop: threading.Event) -> int:
    rank, size = comm.Get_rank(), comm.Get_size()
    started_utc = dt.datetime.now(dt.UTC)
    started_s = time.perf_counter()
    faults = Injector(rank)
    timer = StageTimer()
    WHERE.stage = "config"
    try:
        config = load(options.config)
    except ConfigError as error:
        if rank == 0:
            log.error("%s", error)
        return EXIT_USAGE

    lake = Lake(options.lake)
    state_dir = StateDir(options.state)
    header: dict[str, Any] | None = None
    prepared: Prepared | None = None
    resumed = ShardResults.empty(len(config.component_names), int(config.run["reasons_per_lead"]))
    if rank == 0:
        WHERE.stage = "prepare"
        faults.stage("prepare")
        header, prepared, resumed = _prepare_on_root(options, config, lake, state_dir, timer)
    commlib.wait_for_all(comm)
    header = comm.bcast(header, root=0)
    if header["exit"] is not None:
        return int(header["exit"])

    plan_sizes = header["shard_stop"] - header["shard_start"]
    p0_table = header["p0_table"]
    folder = Path(header["folder"])
    progress = monitor.Progress(int(plan_sizes.sum()) - len(resumed)) if rank == 0 else None
    gathered: list[ShardResults] = [resumed]
    dead_letters: list[dict[str, Any]] = []
    throughput: list[list[float]] = []

    for lane in (partition.PRIORITY, partition.STANDARD):
        lane_ids = np.flatnonzero(header["shard_lane"] == lane)
        lane_ids = lane_ids[~np.isin(lane_ids, header["completed"])]
        owned = partition.assign(plan_sizes, lane_ids, size)
        counts = [int(plan_sizes[ids].sum()) for ids in owned]
        with timer("scatter"):
            send = _lane_send(prepared, header, owned) if rank == 0 else (None, None, None)
            if size == 1:
                # Nothing to send: a single rank scores rank 0's arrays in place.
                values, cohort, positions = send
            else:
                values = commlib.scatter_rows(comm, send[0], counts)
                cohort = commlib.scatter_rows(comm, send[1], counts)
                positions = commlib.scatter_rows(comm, send[2], counts)
            send = (None, None, None)
        work = RankWork(values, cohort, positions, owned[rank], plan_sizes[owned[rank]])
        with timer("score"):
            faults.stage("score")

            def report(increment: int) -> None:
                if progress is None:
                    return
                # Ranks are balanced, so rank 0's share stands for all of them.
                left = max(progress.total - progress.done, 0)
                progress.update(min(increment * size, left))
                elapsed_s = round(time.perf_counter() - started_s, 3)
                if not throughput or elapsed_s - throughput[-1][0] >= 0.25 or not left:
                    throughput.append([elapsed_s, progress.done])
                _write_progress(options, progress)

            outcome = score_work(work, p0_table, config, folder, header["plan_id"], stop, faults, report)
            interrupted = comm.allreduce(outcome.interrupted, op=MPI.LOR)
        with timer("gather"):
            faults.stage("gather")
            lane_results = _gather(comm, outcome.results, config)
            letters = comm.gather(outcome.dead_letters, root=0)
        if interrupted:
            if rank == 0:
                log.warning(
                    "night %s stopped by a signal; checkpoints are in %s, rerun to resume",
                    options.night,
                    folder,
                )
            return EXIT_INTERRUPTED
        if rank == 0:
            assert lane_results is not None and letters is not None
            gathered.append(lane_results)
            dead_letters.extend(letter for rank_letters in letters for letter in rank_letters)
        if lane == partition.PRIORITY:
            scored = len(lane_results) + _lane_resumed(header, lane, resumed) if rank == 0 else 0
            if comm.bcast(scored > 0, root=0):
                with timer("priority_outputs"):
                    _publish_priority(options, comm, config, prepared, gathered, header)
    if progress is not None:
        progress.close()
        (options.state / "progress.json").unlink(missing_ok=True)

    return _finish(
        options, comm, config, prepared, gathered, dead_letters, header, timer,
        started_utc, started_s, throughput, state_dir, faults,
    )


_last_progress_write = [0.0]


def _write_progress(options: Options, progress: monitor.Progress) -> None:
    """Rewrite progress.json and OUT/metrics.prom, at most every 2 seconds."""
    now = time.monotonic()
    if now - _last_progress_write[0] < 2.0 and progress.done < progress.total:
        return
    _last_progress_write[0] = now
    figures = progress.metrics()
    eta = figures["eta_seconds"]
    write_text_atomic(
        options.state / "progress.json",
        json.dumps(
            {
                "night": options.night.isoformat(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "vehicles_done": progress.done,
                "vehicles_total": progress.total,
                "percent_complete": figures["percent_complete"],
                "vehicles_per_second": figures["vehicles_per_second"],
                "eta_s": None if eta != eta else round(eta, 1),
                "updated_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            }
        ),
    )
    monitor.MetricsWriter(options.out / "metrics.prom").write(figures)


def _prepare_on_root(
    options: Options, config: ModelConfig, lake: Lake, state_dir: StateDir, timer: StageTimer
) -> tuple[dict[str, Any], Prepared | None, ShardResults]:
    n_components = len(config.component_names)
    n_reasons = int(config.run["reasons_per_lead"])
    empty = ShardResults.empty(n_components, n_reasons)
    if not lake.exists():
        log.error(
            "lake folder %s not found; pass --lake with the folder that contains registry/,"
            " dealers/ and the dated partitions",
            options.lake,
        )
        return {"exit": EXIT_USAGE}, None, empty
    state_dir.ensure()
    options.out.mkdir(parents=True, exist_ok=True, mode=0o750)
    try:
        prepared = prepare(lake, state_dir, options.night, config, options.full, timer)
    except NightError as error:
        log.error("%s", error)
        return {"exit": EXIT_USAGE}, None, empty
    except SourceError as error:
        log.error("%s; no earlier copy to fall back to, so the night cannot run", error)
        return {"exit": EXIT_FAILED}, None, empty

    folder = checkpoint_folder(state_dir, options.night, prepared.plan_id)
    resumed = empty
    if options.resume:
        resumed = checkpoint.read_all(folder, prepared.plan_id, n_components, n_reasons)
        if len(resumed):
            log.info(
                "resuming night %s: %d shards (%d vehicles) already scored",
                options.night,
                len(resumed.shard_ids),
                len(resumed),
            )
    night_folder = state_dir.checkpoint_dir(options.night)
    if night_folder.exists():
        for other in night_folder.iterdir():
            if other.name != prepared.plan_id or not options.resume:
                shutil.rmtree(other, ignore_errors=True)
    plan = prepared.plan
    header = {
        "exit": None,
        "shard_start": plan.shard_start,
        "shard_stop": plan.shard_stop,
        "shard_lane": plan.shard_lane,
        "completed": resumed.shard_ids,
        "plan_id": prepared.plan_id,
        "folder": str(folder),
        "p0_table": prepared.cohorts.p0,
    }
    return header, prepared, resumed


def _lane_resumed(header: dict[str, Any], lane: int, resumed: ShardResults) -> int:
    lanes = header["shard_lane"][resumed.shard_ids] if len(resumed.shard_ids) else []
    return int(np.count_nonzero(np.asarray(lanes) == lane))


def _lane_send(
    prepared: Prepared | None, header: dict[str, Any], owned: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    assert prepared is not None
    ranges = [
        np.arange(header["shard_start"][shard], header["shard_stop"][shard])
        for ids in owned
        for shard in ids
    ]
    positions = np.concatenate(ranges).astype(np.int64) if ranges else np.empty(0, np.int64)
    cohort = prepared.cohorts.of_vehicle[prepared.plan.order[positions]].astype(np.int32)
    contiguous = len(positions) > 0 and positions[-1] - positions[0] + 1 == len(positions)
    if contiguous and (np.diff(positions) == 1).all():
        # One block (always so on one rank): a view instead of a copy.
        return prepared.values[positions[0] : positions[-1] + 1], cohort, positions
    return prepared.values[positions], cohort, positions


def _gather(comm: MPI.Intracomm, results: ShardResults, config: ModelConfig) -> ShardResults | None:
    shard_ids = comm.gather(results.shard_ids, root=0)
    arrays = {
        name: commlib.gather_rows(comm, getattr(results, name))
        for name in ("positions", "p", "risk", "revenue", "top", "severity", "reasons")
    }
    if comm.Get_rank() != 0:
        return None
    assert shard_ids is not None
    return ShardResults(np.concatenate(shard_ids), **arrays)  # type: ignore[arg-type]


def _components(config: ModelConfig) -> list[dict[str, str]]:
    return [
        {"name": name, "label": label}
        for name, label in zip(config.component_names, config.component_labels)
    ]


def _publish_priority(
    options: Options,
    comm: MPI.Intracomm,
    config: ModelConfig,
    prepared: Prepared | None,
    gathered: list[ShardResults],
    header: dict[str, Any],
) -> None:
    """Publish the priority lane's leads before the standard lane starts.

    Rank 0 builds the leads. Every rank renders its share of the dealers
    that have one, and rank 0 publishes the folder.
    """
    rank, size = comm.Get_rank(), comm.Get_size()
    payload: dict[str, Any] | None = None
    staging: Staging | None = None
    leads: Any = None
    try:
        if rank == 0:
            assert prepared is not None
            n_components = len(config.component_names)
            n_reasons = int(config.run["reasons_per_lead"])
            results = ShardResults.concatenate(gathered, n_components, n_reasons)
            lane = header["shard_lane"]
            in_lane = np.isin(results.shard_ids, np.flatnonzero(lane == partition.PRIORITY))
            priority_shards = set(results.shard_ids[in_lane].tolist())
            starts, stops = header["shard_start"], header["shard_stop"]
            positions = [np.arange(starts[s], stops[s]) for s in sorted(priority_shards)]
            priority_positions = np.concatenate(positions) if positions else np.empty(0, np.int64)
            keep = np.isin(results.positions, priority_positions)
            partial = ShardResults(
                results.shard_ids, *(getattr(results, n)[keep] for n in ("positions", "p", "risk", "revenue", "top", "severity", "reasons"))
            )
            merged = outputs.merge_store(prepared, partial, config, partial=True)
            leads = outputs.leads_table(config, merged, prepared)
            staging = Staging(options.out / "priority", options.night.isoformat())
            pq.write_table(leads, staging.path / "leads.parquet", compression="zstd")
            dealers = outputs.dealer_records(prepared, options.night)
            with_leads = set(leads.column("dealer_id").to_pylist())
            payload = {
                "dealers": dealers,
                "rows": [i for i, d in enumerate(dealers) if d["dealer_id"] in with_leads],
                "leads_ipc": _to_ipc(leads) if size > 1 else b"",
                "folder": str(staging.folder("dealers")),
                "leads": leads.num_rows,
            }
        commlib.wait_for_all(comm)
        payload = comm.bcast(payload, root=0)
        assert payload is not None
        if leads is None:
            leads = _from_ipc(payload["leads_ipc"])
        outputs.render_dealers(
            payload["dealers"], payload["rows"][rank::size], leads,
            outputs.RESOLVED_SCHEMA.empty_table(), options.night, Path(payload["folder"]),
            _components(config), deadlines.night_start_utc(options.night),
        )
        commlib.wait_for_all(comm)
        if staging is not None:
            staging.manifest(
                {"run_date": options.night.isoformat(), "lane": "priority", "leads": payload["leads"]}
            )
            staging.publish()
    except BaseException:
        if staging is not None:
            staging.discard()
        raise
    if rank == 0:
        log.info(
            "priority lane published: %d leads for %d dealers", payload["leads"], len(payload["rows"])
        )


def _finish(
    options: Options,
    comm: MPI.Intracomm,
    config: ModelConfig,
    prepared: Prepared | None,
    gathered: list[ShardResults],
    dead_letters: list[dict[str, Any]],
    header: dict[str, Any],
    timer: StageTimer,
    started_utc: dt.datetime,
    started_s: float,
    throughput: list[list[float]],
    state_dir: StateDir,
    faults: Injector,
) -> int:
    """Merge, check the error budget, render, publish and commit."""
    rank, size = comm.Get_rank(), comm.Get_size()
    n_components = len(config.component_names)
    n_reasons = int(config.run["reasons_per_lead"])
    decision: dict[str, Any] = {"exit": None}
    context: dict[str, Any] = {}
    alerts = monitor.Alerts(command=options.alert_command, sns_topic_arn=options.sns_topic_arn)
    if rank == 0:
        assert prepared is not None
        with timer("reduce"):
            results = ShardResults.concatenate(gathered, n_components, n_reasons)
            gathered.clear()
            merged = outputs.merge_store(prepared, results, config)
            # The stressor values are no longer needed: free them before the outputs.
            del results
            prepared.values = np.empty((0, prepared.values.shape[1]))
            for position in merged.failed_positions:
                prepared.rejects.add(
                    "scoring", "scoring_failed", [prepared.fleet.vin[prepared.plan.order[position]]], options.night
                )
            rate = prepared.rejects.rate_per_1000()
            budget = float(config.run["error_budget_per_1000"])
            if rate > budget:
                alerts.add(
                    "error",
                    "error-rate-over-budget",
                    f"{rate:.3f} rejected rows per 1,000 read exceeds the budget of {budget}",
                    rate_per_1000=rate,
                    budget_per_1000=budget,
                    rejects=prepared.rejects.by_reason(),
                )
            if rate > budget and not options.accept_error_rate:
                _pause(options, state_dir, prepared, alerts)
                decision = {"exit": EXIT_PAUSED}
            else:
                staging = Staging(options.out, options.night.isoformat())
                context = _write_root_outputs(options, config, prepared, merged, staging, timer)
                decision = {
                    "exit": None,
                    "staging": str(staging.path),
                    "dealers": context["dealers"],
                    "leads_ipc": context["leads_ipc"],
                    "resolved_ipc": context["resolved_ipc"],
                }
    commlib.wait_for_all(comm)
    decision = comm.bcast(decision, root=0)
    if decision["exit"] is not None:
        return int(decision["exit"])

    with timer("report"):
        faults.stage("report")
        leads = _from_ipc(decision["leads_ipc"])
        resolved = _from_ipc(decision["resolved_ipc"])
        dealers = decision["dealers"]
        mine = list(range(rank, len(dealers), size))
        written = outputs.render_dealers(
            dealers, mine, leads, resolved, options.night,
            Path(decision["staging"]) / "dealers", _components(config),
            deadlines.night_start_utc(options.night),
        )
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        everything = comm.gather((written, peak_rss), root=0)
    if rank != 0:
        commlib.wait_for_all(comm)
        return int(comm.bcast(None, root=0))

    assert prepared is not None and everything is not None
    written_all: dict[str, str] = {}
    for part, _ in everything:
        written_all.update(part)
    context["peak_rss_bytes"] = [rss for _, rss in everything]
    code = _publish_and_commit(
        options, config, prepared, context, written_all, dead_letters, alerts, timer,
        started_utc, started_s, throughput, state_dir, faults, size,
    )
    commlib.wait_for_all(comm)
    return int(comm.bcast(code, root=0))


def _from_ipc(payload: bytes) -> Any:
    import pyarrow as pa

    with pa.ipc.open_stream(payload) as reader:
        return reader.read_all()


def _to_ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _pause(options: Options, state_dir: StateDir, prepared: Prepared, alerts: monitor.Alerts) -> None:
    """Keep the checkpoints and the evidence, publish nothing."""
    folder = state_dir.root / "paused" / options.night.isoformat()
    folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    pq.write_table(prepared.rejects.table(), folder / "rejects.parquet")
    os.chmod(folder / "rejects.parquet", 0o640)
    alerts.write(folder / "alerts.json")
    log.error(
        "night %s paused before publishing: rejects are in %s; fix the inputs or rerun"
        " with --accept-error-rate to publish from the checkpoints",
        options.night,
        folder,
    )


def _write_root_outputs(
    options: Options,
    config: ModelConfig,
    prepared: Prepared,
    merged: outputs.Merged,
    staging: Staging,
    timer: StageTimer,
) -> dict[str, Any]:
    with timer("segment"):
        leads = outputs.leads_table(config, merged, prepared)
        resolved = outputs.resolved_table(config, prepared, merged)
        dealers = outputs.dealer_records(prepared, options.night)
        # Last night's scores were needed only for the leads' previous
        # severities and the resolved leads, so they are freed here.
        prepared.base.scores = ScoreStore.empty(
            len(config.component_names), int(config.run["reasons_per_lead"])
        )
    with timer("write_scores"):
        write_scores_dataset(
            config, merged.store, options.night, merged.changed, prepared.fleet,
            merged.fleet_rows, staging.folder("scores"),
        )
        write_salesforce_csv(leads, staging.folder("salesforce") / "leads.csv")
        pq.write_table(prepared.rejects.table(), staging.path / "rejects.parquet")
    return {
        "merged": merged,
        "leads": leads,
        "dealers": dealers,
        "staging": staging,
        "leads_ipc": _to_ipc(leads),
        "resolved_ipc": _to_ipc(resolved),
    }


def _publish_and_commit(
    options: Options,
    config: ModelConfig,
    prepared: Prepared,
    context: dict[str, Any],
    written: dict[str, str],
    dead_letters: list[dict[str, Any]],
    alerts: monitor.Alerts,
    timer: StageTimer,
    started_utc: dt.datetime,
    started_s: float,
    throughput: list[list[float]],
    state_dir: StateDir,
    faults: Injector,
    ranks: int,
) -> int:
    staging: Staging = context["staging"]
    merged: outputs.Merged = context["merged"]
    leads = context["leads"]
    dealers = context["dealers"]
    night = options.night
    with timer("publish"):
        faults.stage("publish")
        for reason in prepared.degraded:
            alerts.add("error", "source-degraded", f"the night ran on fallback data: {reason}")
        for letter in dead_letters:
            alerts.add("warning", "dead-letter-shard", f"shard {letter['shard']} failed {letter['attempts']} times and was scored one by one", shard=letter["shard"])
        elapsed_s = time.perf_counter() - started_s
        scored = int(len(prepared.plan.order))
        rate = scored / max(elapsed_s, 1e-9)
        if len(prepared.fleet) >= int(config.run["rate_alert_min_vehicles"]) and rate < float(config.run["rate_alert_vps"]):
            alerts.add("warning", "rate-below-threshold", f"{rate:,.0f} vehicles/s is below {config.run['rate_alert_vps']:,.0f}")
        finished_utc = dt.datetime.now(dt.UTC)
        dealer_rows = [
            {
                "dealer_id": d["dealer_id"],
                "deadline_utc": d["deadline_utc"],
                "outputs_written_utc": _parse_utc(written.get(d["dealer_id"])),
            }
            for d in dealers
        ]
        sla = monitor.build_sla(
            run_date=night,
            started_utc=started_utc,
            finished_utc=finished_utc,
            window_s=float(config.run["window_hours"]) * 3600.0,
            dealers=dealer_rows,
            vehicles_per_second=rate,
            rate_threshold_per_s=float(config.run["rate_alert_vps"]) if len(prepared.fleet) >= int(config.run["rate_alert_min_vehicles"]) else 0.0,
            error_rate_per_1000=prepared.rejects.rate_per_1000(),
            error_budget_per_1000=float(config.run["error_budget_per_1000"]),
        )
        monitor.alert_on_sla(sla, alerts)
        staging.write_json("sla.json", sla)
        staging.write_json("dead_letters.json", dead_letters)
        alerts.write(staging.path / "alerts.json")

        sizes = [(path, path.stat().st_size) for path in staging.files()]
        output_bytes = sum(size for _, size in sizes)
        dealer_bytes = sum(
            size for path, size in sizes if path.relative_to(staging.path).parts[0] == "dealers"
        )
        summary = _summary(options, config, prepared, merged, leads, dealers, timer, started_utc, finished_utc, throughput, alerts, ranks, sla, context["peak_rss_bytes"], output_bytes, dealer_bytes)
        write_summary(summary, staging.path)
        metrics = _metrics(summary, elapsed_s, rate, prepared)
        monitor.MetricsWriter(staging.path / "metrics.prom").write(metrics)
        deadline_map = {
            d["dealer_id"]: {
                "deadline_utc": d["deadline_utc"].strftime("%Y-%m-%dT%H:%M:%SZ"),
                "written_utc": written.get(d["dealer_id"]),
                "timezone": d["timezone"],
            }
            for d in dealers
        }
        staging.manifest(
            {
                "run_date": night.isoformat(),
                "plan_id": prepared.plan_id,
                "mode": "full" if options.full else "delta",
                "night_start_utc": deadlines.night_start_utc(night).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "dealers": deadline_map,
                "degraded": prepared.degraded,
            }
        )
        link = staging.publish()

    with timer("commit"):
        generation = Generation(
            night=night,
            vehicles=prepared.vehicles,
            scores=merged.store,
            cohort_cache=_cache(prepared),
            meta={
                "config_fingerprint": config.fingerprint,
                "plan_id": prepared.plan_id,
                "folded": prepared.folded,
            },
            fleet=prepared.fleet,
            dealers=prepared.dealers,
        )
        state_dir.commit(generation)
        shutil.rmtree(state_dir.checkpoint_dir(night), ignore_errors=True)
        metrics["last_success_timestamp_seconds"] = time.time()
        monitor.MetricsWriter(options.out / "metrics.prom").write(metrics)
        state_dir.record_run(
            {
                "night": night.isoformat(),
                "committed": True,
                "finished_utc": dt.datetime.now(dt.UTC).isoformat(),
                "vehicles_total": len(prepared.fleet),
                "vehicles_changed": scored,
                "leads_total": leads.num_rows,
                "degraded": bool(prepared.degraded),
                "elapsed_s": round(time.perf_counter() - started_s, 3),
                "ranks": ranks,
                "mode": "full" if options.full else "delta",
                "output": str(link),
            }
        )
    if options.publish:
        with timer("upload"):
            try:
                upload_s3(link.resolve(), options.publish, night)
            except S3PublishError as error:
                alerts.add("error", "s3-upload-failed", str(error))
                alerts.write(link.resolve().parent / f"{link.name}.s3-alerts.json")
                log.error("night %s is published locally but not on S3: %s", night, error)
                return EXIT_FAILED
    log.info(
        "night %s done in %.1f s: %d vehicles, %d rescored, %d leads -> %s",
        night, time.perf_counter() - started_s, len(prepared.fleet), scored, leads.num_rows, link,
    )
    return EXIT_DEGRADED if prepared.degraded else EXIT_OK


def _parse_utc(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def _cache(prepared: Prepared) -> dict[tuple[str, int, str, str], int]:
    cache = dict(prepared.base.cohort_cache)
    cache.update(prepared.cohorts.cache_entries())
    oldest = (prepared.cohorts.baseline_date - dt.timedelta(days=14)).isoformat()
    return {key: value for key, value in cache.items() if key[3] >= oldest}


def _summary(
    options: Options,
    config: ModelConfig,
    prepared: Prepared,
    merged: outputs.Merged,
    leads: Any,
    dealers: list[dict[str, Any]],
    timer: StageTimer,
    started_utc: dt.datetime,
    finished_utc: dt.datetime,
    throughput: list[list[float]],
    alerts: monitor.Alerts,
    ranks: int,
    sla: dict[str, Any],
    context_rss: list[int],
    output_bytes: int,
    dealer_bytes: int,
) -> dict[str, Any]:
    elapsed_h = (finished_utc - started_utc).total_seconds() / 3600.0
    nodes = int(os.environ.get("SLURM_JOB_NUM_NODES", "1"))
    node_hours = nodes * elapsed_h
    on_demand = node_hours * float(config.run["on_demand_usd_per_hour"])
    spot = node_hours * float(config.run["spot_usd_per_hour"])
    vehicles = max(len(prepared.fleet), 1)
    # Storage: this night's outputs kept for a month, charged per night;
    # transfer: the dealer files sent out of the cloud to the dealers.
    storage = output_bytes / 1e9 * float(config.run["storage_usd_per_gb_month"]) / 30.0
    transfer = dealer_bytes / 1e9 * float(config.run["transfer_usd_per_gb"])
    return {
        "run_date": options.night.isoformat(),
        "started_utc": started_utc.isoformat(),
        "finished_utc": finished_utc.isoformat(),
        "ranks": ranks,
        "host": socket.gethostname(),
        "mode": "full" if options.full else "delta",
        "vehicles_total": len(prepared.fleet),
        "vehicles_changed": int(len(prepared.plan.order)),
        "vehicles_priority": int(prepared.changes.priority.sum()),
        "change_reasons": prepared.changes.counts(),
        "severity_counts": outputs.severity_counts(merged.store),
        "leads_total": outputs.lead_count(leads),
        "revenue_total_usd": outputs.revenue_total(leads),
        "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items()},
        "throughput": throughput,
        "leads_by_region": outputs.leads_by_region(leads, dealers),
        "cost": {
            "instance_type": config.run["instance_type"],
            "node_hours": round(node_hours, 6),
            "on_demand_usd": round(on_demand, 6),
            "spot_usd": round(spot, 6),
            "on_demand_usd_per_hour": float(config.run["on_demand_usd_per_hour"]),
            "spot_usd_per_hour": float(config.run["spot_usd_per_hour"]),
            "storage_usd": round(storage, 8),
            "transfer_usd": round(transfer, 8),
            "output_bytes": output_bytes,
            # Compute only, at each price; storage and transfer are listed apart.
            "per_million_vehicles_usd": round(on_demand / vehicles * 1e6, 6),
            "per_million_vehicles_spot_usd": round(spot / vehicles * 1e6, 6),
        },
        "rejects": prepared.rejects.by_source(),
        "reject_reasons": prepared.rejects.by_reason(),
        "error_rate_per_1000": round(prepared.rejects.rate_per_1000(), 6),
        "degraded": bool(prepared.degraded),
        "degraded_sources": prepared.degraded,
        "alerts": [
            {"level": a["level"], "kind": a["kind"], "message": a["message"]} for a in alerts.alerts
        ],
        "dealers_total": len(dealers),
        "dealers_late": int(sla["dealers"]["missed"]),
        "servicing_dealer": prepared.dealer_counts,
        "weather_partition": prepared.alerts.partition_date.isoformat() if prepared.alerts.partition_date else None,
        "alerts_counted": prepared.alerts.alerts_counted,
        "partitions_read": prepared.partitions_read,
        "telematics_vins_not_in_registry": prepared.not_in_registry,
        "cohorts": len(prepared.cohorts.names),
        "cohorts_recomputed": prepared.cohorts.recomputed(prepared.base.cohort_cache),
        "baseline_date": prepared.cohorts.baseline_date.isoformat(),
        # Peak resident memory of each rank up to the report stage (getrusage).
        "peak_rss_bytes_per_rank": context_rss,
        "peak_rss_bytes_total": int(sum(context_rss)),
    }


def _metrics(summary: dict[str, Any], elapsed_s: float, rate: float, prepared: Prepared) -> dict[str, Any]:
    return {
        "vehicles_per_second": rate,
        "percent_complete": 100.0,
        "error_rate_per_1000": summary["error_rate_per_1000"],
        "stage_duration_seconds": summary["stage_seconds"],
        "vehicles_total": {
            "changed": summary["vehicles_changed"],
            "scored": summary["vehicles_changed"],
            "carried": summary["vehicles_total"] - summary["vehicles_changed"],
        },
        "leads": {
            name: summary["severity_counts"][name] for name in ("CRITICAL", "HIGH", "MODERATE")
        },
        "rejects_total": {source: count for source, count in summary["rejects"].items()},
        "dealers_late": summary["dealers_late"],
        "run_degraded": 1.0 if summary["degraded"] else 0.0,
        "run_start_timestamp_seconds": dt.datetime.fromisoformat(summary["started_utc"]).timestamp(),
    }
