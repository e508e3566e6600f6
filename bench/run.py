"""Benchmark prim against Python peers: ``python -m bench.run --mode quick|full``.

First the latency runs of scenario 1 go in rounds: every system is started,
and each round runs each system once while the others stay up, idle. Then,
for each system (prim, python-socketio, Django Channels, the picows relay) in
turn, this starts its servers, runs the four scenarios, each from its own
load generator process (bench/loadgen.py), and stops the servers before the
next system starts. Between the two, the transport floor step measures
gRPC stream hops and a Redis publish alone, at the latency rate
(bench/hops.py). The scenarios:

1. cross-node pairs: senders on server 1, receivers on server 2. The run
   measures delivered messages/s at saturation, and latency at a fixed total
   rate. prim runs online-only (``persist: false``) and again with stored
   messages, and the Mongo server's own insert rate is measured beside it.
   py-spy records prim's edges, router, presence and Mongo server during extra
   saturation runs.
2. idle connections: RSS growth of server 1 per logged-in idle connection.
3. connect storm: every client connects at once to server 1.
4. broadcast: one tenant's connections over both servers, deliveries/s.

The results go to OUT/results.json, then bench/report.py writes the
Markdown page and the chart. Working files and server logs go to var/bench/.
"""

from __future__ import annotations

import argparse
import json
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from bench import environment, hops, mongo_rate, profile, report
from bench.systems import ROOT, SYSTEMS, System

WORK_DIR = ROOT / "var" / "bench"


@dataclass(frozen=True)
class Plan:
    """Sizes and durations of one run; every load loop is bounded by them."""

    pairs: int = 100
    window: int = 8  # messages in flight per pair at saturation
    warmup_seconds: float = 2.0
    saturation_seconds: float = 10.0
    latency_rate: int = 1000  # messages/s over all pairs
    latency_seconds: float = 10.0
    idle_connections: int = 2000
    storm_clients: int = 1000
    broadcast_connections: int = 2000
    broadcast_window: int = 2  # broadcasts in flight
    broadcast_seconds: float = 10.0
    insert_seconds: float = 5.0
    profile_seconds: float = 10.0
    # Runs of the latency and storm scenarios; the median run is reported.
    # One run of either lasts seconds, and this host's speed varies by tens
    # of percent between such runs.
    repeats: int = 3


PLANS = {
    "quick": Plan(
        latency_seconds=5.0, broadcast_seconds=5.0, insert_seconds=3.0, profile_seconds=8.0
    ),
    "full": Plan(
        warmup_seconds=5.0,
        saturation_seconds=30.0,
        latency_seconds=30.0,
        idle_connections=5000,
        broadcast_seconds=30.0,
        insert_seconds=10.0,
        profile_seconds=20.0,
    ),
}


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit to its hard limit; child processes inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


class Loadgen:
    """One load generator process; its stdout lines are JSON events."""

    def __init__(self, name: str, config: dict):
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        config_path = WORK_DIR / f"{name}.json"
        config_path.write_text(json.dumps(config))
        self.stderr = open(WORK_DIR / f"{name}.stderr.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.loadgen", str(config_path)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        self.events: queue.Queue[dict | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"event": "output", "text": line.rstrip()})
        self.events.put(None)

    def wait(self, event: str, timeout: float) -> dict:
        """Return the next ``event`` line; raise if the process ends or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"load generator sent no {event!r} event in {timeout:.0f} s")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if item is None:
                raise RuntimeError(
                    f"load generator exited with {self.proc.wait()} before {event!r}; "
                    f"see {self.stderr.name}"
                )
            if item.get("event") == event:
                return item

    def tell(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stderr.close()


def run_loadgen(name: str, config: dict, timeout: float, on_measuring=None) -> dict:
    loadgen = Loadgen(name, config)
    try:
        if on_measuring is not None:
            event = loadgen.wait("measuring", timeout)
            on_measuring(event)
        result = loadgen.wait("result", timeout)
        result.pop("event", None)
        return result
    finally:
        loadgen.stop()


# Scenarios


def pairs_config(system: System, plan: Plan, persist: bool | None) -> dict:
    pairs = [
        {
            "sender": system.credential(f"s{i}"),
            "receiver": system.credential(f"r{i}"),
            "to": f"r{i}",
        }
        for i in range(plan.pairs)
    ]
    config = {
        "scenario": "pairs",
        "protocol": system.protocol,
        "sender_url": system.sender_url,
        "receiver_url": system.receiver_url,
        "pairs": pairs,
        "warmup_seconds": plan.warmup_seconds,
    }
    if persist is not None:
        config["persist"] = persist
    return config


def saturate(
    system: System, plan: Plan, persist: bool | None = None, profile_tag: str = ""
) -> dict:
    """Scenario 1 at saturation; with ``profile_tag``, py-spy records the servers meanwhile."""
    config = {
        **pairs_config(system, plan, persist),
        "window": plan.window,
        "duration_seconds": plan.profile_seconds if profile_tag else plan.saturation_seconds,
    }
    recordings: list[profile.Recording] = []

    def start_profile(event: dict) -> None:
        if profile_tag:
            out = WORK_DIR / "profiles"
            recordings.extend(
                profile.start(system.profile_pids(), event["seconds"] - 1, out, profile_tag)
            )

    timeout = 120 + config["warmup_seconds"] + config["duration_seconds"]
    name = f"{system.name}-saturate-{profile_tag or persist}"
    result = with_drops(system, lambda: run_loadgen(name, config, timeout, start_profile))
    if profile_tag:
        result["profile"] = profile.finish(recordings)
    return result


def fixed_rate_run(system: System, plan: Plan, index: int) -> dict:
    """Run scenario 1 once at the fixed latency rate. prim sends online-only messages."""
    persist = False if system.name == "prim" else None
    config = {
        **pairs_config(system, plan, persist),
        "rate": plan.latency_rate,
        "duration_seconds": plan.latency_seconds,
    }
    timeout = 120 + plan.warmup_seconds + plan.latency_seconds
    name = f"{system.name}-rate-{index + 1}"
    return with_drops(system, lambda: run_loadgen(name, config, timeout))


# Rounds run before the measured latency rounds, left out of the medians.
# In latency runs on 2026-12-05, prim's first round after its start had the
# highest p99 in most runs (in one, 4.9 ms against 2.6 and 2.0 ms after).
# A server that has been up for a while is more like the later rounds. Every
# system gets the same warm-up round, and its p99 is still reported.
WARMUP_ROUNDS = 1


def latency_rounds(names: list[str], plan: Plan) -> dict[str, dict]:
    """Measure scenario 1's latency in ``plan.repeats`` rounds, each system once per round.

    A warm-up round (``WARMUP_ROUNDS``) goes first and is reported apart.

    The systems run side by side, idle but for the one being measured, so
    that each round measures every system within a minute or so. This host's
    speed drifts over minutes, so systems measured one after another could
    meet different conditions. Each system is reported by its run with the
    median p99. A system that cannot start is recorded as an error.
    """
    started: dict[str, System] = {}
    results: dict[str, dict] = {}
    runs: dict[str, list[dict]] = {}
    warmups: dict[str, list[dict]] = {}
    users = {"pairs": users_for(plan)["pairs"]}
    try:
        for name in names:
            system = SYSTEMS[name](WORK_DIR / "logs" / "latency")
            log(f"{name}: starting for the latency rounds")
            # Listed before it starts, so that an interrupted start is stopped too.
            started[name] = system
            try:
                system.start(users)
            except Exception as exc:  # noqa: BLE001 - recorded, the other systems go on
                traceback.print_exc()
                results[name] = {"error": f"{type(exc).__name__}: {exc}"}
                stop_quietly(started.pop(name))
                continue
            runs[name] = []
            warmups[name] = []
        # Round 0 warms every system up and is not counted: see WARMUP_ROUNDS.
        for index in range(-WARMUP_ROUNDS, plan.repeats):
            for name, system in started.items():
                try:
                    # The previous system's backlog must not land on this one's run.
                    settle(*started.values())
                    run = fixed_rate_run(system, plan, index)
                except Exception as exc:  # noqa: BLE001 - recorded, the run goes on
                    traceback.print_exc()
                    run = {"error": f"{type(exc).__name__}: {exc}"}
                run["round"] = index + 1
                if index < 0:
                    warmups[name].append(run)
                    log(f"{name}: latency warm-up -> {json.dumps(brief(run))}")
                    continue
                runs[name].append(run)
                log(f"{name}: latency round {index + 1} -> {json.dumps(brief(run))}")
    finally:
        # A second Ctrl-C while stopping one system still lets the rest stop.
        interrupted = None
        for name, system in started.items():
            log(f"{name}: stopping after the latency rounds")
            try:
                stop_quietly(system)
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted
    for name, system_runs in runs.items():
        # Failed runs are listed too. median_run leaves runs with an error
        # out of the median.
        results[name] = median_run(system_runs, run_p99, LATENCY_RUN_KEYS)
        results[name]["warmup_runs"] = [
            {field: run.get(field) for field in LATENCY_RUN_KEYS} for run in warmups[name]
        ]
    return results


def run_p99(run: dict) -> float:
    """Return a latency run's p99 for sorting runs. A run that measured nothing sorts as the slowest."""
    p99 = (run.get("latency_ms") or {}).get("p99")
    return float("inf") if p99 is None else p99


def stop_quietly(system: System) -> None:
    """Stop a system, printing instead of raising what fails, so the next one is stopped too."""
    try:
        system.stop()
    except Exception:  # noqa: BLE001 - a half-started system may lack what stop() expects
        traceback.print_exc()


def idle(system: System, plan: Plan) -> dict:
    """Scenario 2: RSS growth of server 1 per idle logged-in connection."""
    server = psutil.Process(system.server1_pid())
    before = server.memory_info().rss
    config = {
        "scenario": "idle",
        "protocol": system.protocol,
        "url": system.sender_url,
        "credentials": [system.credential(f"c{i}") for i in range(plan.idle_connections)],
        "hold_seconds": 300,
    }
    loadgen = Loadgen(f"{system.name}-idle", config)
    try:
        ready = loadgen.wait("ready", 300)
        time.sleep(2.0)  # let the server finish the work that each login started
        after = server.memory_info().rss
        loadgen.tell("release")
        result = loadgen.wait("result", 120)
    finally:
        loadgen.stop()
    result.pop("event", None)
    connected = ready["connected"]
    result.update(
        rss_before_bytes=before,
        rss_after_bytes=after,
        rss_per_connection_bytes=(after - before) / connected if connected else None,
        setup_seconds=ready["seconds"],
    )
    return result


def storm(system: System, plan: Plan) -> dict:
    """Scenario 3: every client connects (and, for prim, logs in) at once on server 1.

    It runs ``plan.repeats`` times with the same clients and is reported by
    the median connects/s.
    """
    config = {
        "scenario": "storm",
        "protocol": system.protocol,
        "url": system.sender_url,
        "credentials": [system.credential(f"t{i}") for i in range(plan.storm_clients)],
    }
    runs = []
    for index in range(plan.repeats):
        if index:
            settle(system)
        runs.append(run_loadgen(f"{system.name}-storm-{index + 1}", config, 300))
    return median_run(runs, lambda run: run["connects_per_second"], ("connects_per_second", "failed"))


# Fields of each latency run kept in the median run's "runs" list.
LATENCY_RUN_KEYS = (
    "round",
    "error",
    "latency_ms",
    "latency_from_send_ms",
    "lost",
    "duplicated",
    "reordered",
    "misrouted",
    "server_drops",
)
# Counters summed over all runs, so a loss in any run is reported.
SUMMED_KEYS = ("sent", "received", "rejected", "lost", "duplicated", "reordered", "misrouted", "failed")


def median_run(runs: list[dict], key, fields: tuple[str, ...]) -> dict:
    """Return the run with the median ``key``, with every run's ``fields`` under "runs".

    The counters in SUMMED_KEYS are the sums over all runs, not the median
    run's. Runs that failed with an error are left out of the median, and if
    every run failed, the first one is returned.
    """
    measured = [run for run in runs if "error" not in run]
    if not measured:
        return runs[0]
    ordered = sorted(measured, key=key)
    result = dict(ordered[(len(ordered) - 1) // 2])
    for counter in SUMMED_KEYS:
        if counter in result:
            result[counter] = sum(run.get(counter, 0) for run in measured)
    result["runs"] = [{field: run.get(field) for field in fields} for run in runs]
    return result


def broadcast(system: System, plan: Plan) -> dict:
    """Scenario 4: broadcasts to every connection of one tenant, spread over both servers."""
    config = {
        "scenario": "broadcast",
        "protocol": system.protocol,
        "urls": system.server_urls,
        "credentials": [system.credential(f"c{i}") for i in range(plan.broadcast_connections)],
        "window": plan.broadcast_window,
        "warmup_seconds": plan.warmup_seconds,
        "duration_seconds": plan.broadcast_seconds,
        **system.broadcast_settings(),
    }
    timeout = 300 + plan.broadcast_seconds
    return with_drops(system, lambda: run_loadgen(f"{system.name}-broadcast", config, timeout))


def with_drops(system: System, run) -> dict:
    """Run a scenario and add the messages the servers report as dropped meanwhile."""
    before = system.drop_counters()
    result = run()
    after = system.drop_counters()
    drops = {key: after.get(key, 0) - before.get(key, 0) for key in after}
    if drops:
        result["server_drops"] = drops
    return result


STEPS = (
    "live",
    "latency",
    "stored",
    "mongo_insert",
    "profile_live",
    "profile_stored",
    "idle",
    "storm",
    "broadcast",
    "hops",
)


def users_for(plan: Plan) -> dict[str, list[str]]:
    return {
        "pairs": [f"s{i}" for i in range(plan.pairs)] + [f"r{i}" for i in range(plan.pairs)],
        "connections": [
            f"c{i}" for i in range(max(plan.idle_connections, plan.broadcast_connections))
        ],
        "storm": [f"t{i}" for i in range(plan.storm_clients)],
    }


def measure(
    system: System, plan: Plan, with_profile: bool, only: set[str] | None = None
) -> dict:
    """Run the scenarios on a started system; a failed scenario records its error and the run goes on.

    With ``only``, just the steps of those names run.
    """
    results: dict[str, dict] = {}
    prim = system.name == "prim"
    steps = [
        ("live", lambda: saturate(system, plan, persist=False if prim else None)),
    ]
    if prim:
        steps += [
            ("stored", lambda: saturate(system, plan, persist=True)),
            (
                "mongo_insert",
                lambda: mongo_rate.measure(system.cluster.mongo_url, plan.insert_seconds),
            ),
        ]
        if with_profile:
            steps += [
                ("profile_live", lambda: saturate(system, plan, False, "live")),
                ("profile_stored", lambda: saturate(system, plan, True, "stored")),
            ]
    steps += [
        ("idle", lambda: idle(system, plan)),
        ("storm", lambda: storm(system, plan)),
        ("broadcast", lambda: broadcast(system, plan)),
    ]
    for name, step in steps:
        if only is not None and name not in only:
            continue
        settle(system)
        log(f"{system.name}: {name}")
        try:
            results[name] = step()
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the run goes on
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"{system.name}: {name} -> {json.dumps(brief(results[name]))}")
    return results


def settle(*systems: System, busy_percent: float = 10.0, max_seconds: float = 20.0) -> None:
    """Wait until the servers are nearly idle, so a scenario does not pay for the previous one.

    Closing thousands of connections leaves work behind, such as presence
    removal or group cleanup. This waits up to ``max_seconds`` for the
    summed CPU use of the systems' servers to fall below ``busy_percent`` of one core.
    """
    processes = [psutil.Process(pid) for system in systems for pid in system.server_pids()]
    for process in processes:
        process.cpu_percent()
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if sum(process.cpu_percent() for process in processes) < busy_percent:
            return


def brief(result: dict) -> dict:
    keys = (
        "delivered_per_second",
        "deliveries_per_second",
        "latency_ms",
        "lost",
        "duplicated",
        "reordered",
        "rss_per_connection_bytes",
        "connects_per_second",
        "failed",
        "error",
        "insert_one_per_second",
        "insert_many_per_second",
        "timeline_messages_per_second",
        "server_drops",
    )
    return {key: result[key] for key in keys if key in result}


def run(
    names: list[str], mode: str, out_dir: Path, with_profile: bool, only: set[str] | None = None
) -> dict:
    plan = PLANS[mode]
    results = {
        "mode": mode,
        "plan": asdict(plan),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "open_file_limit": raise_open_file_limit(),
        "machine": environment.machine(),
        "versions": environment.versions(),
        "systems": {},
    }
    for name in names:
        results["systems"][name] = {"label": SYSTEMS[name].label}
    if only is None or "latency" in only:
        for name, latency in latency_rounds(names, plan).items():
            results["systems"][name]["latency"] = latency
    if only is None or "hops" in only:
        log("transport floor")
        try:
            results["hops"] = hops.measure(
                plan.latency_rate, plan.latency_seconds, plan.repeats, WORK_DIR / "logs" / "hops"
            )
        except Exception as exc:  # noqa: BLE001 - recorded in the results, the run goes on
            traceback.print_exc()
            results["hops"] = {"error": f"{type(exc).__name__}: {exc}"}
    # With only the latency or hops step selected, no system needs starting again.
    other_steps = only is None or bool(only - {"latency", "hops"})
    for name in names if other_steps else []:
        system = SYSTEMS[name](WORK_DIR / "logs")
        log(f"{name}: starting")
        try:
            system.start(users_for(plan))
            results["systems"][name].update(measure(system, plan, with_profile, only))
        except Exception as exc:  # noqa: BLE001 - a system that cannot start is recorded, not fatal
            traceback.print_exc()
            results["systems"][name]["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            log(f"{name}: stopping")
            system.stop()
    results["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    if with_profile:
        results["profiles_dir"] = str((WORK_DIR / "profiles").relative_to(ROOT))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def stop_on_signal(signum, frame) -> None:
    """Unwind on SIGTERM as on Ctrl-C, so every server started so far is stopped."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--mode", choices=sorted(PLANS), default="quick", help="sizes and durations"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of " + ", ".join(SYSTEMS),
    )
    parser.add_argument(
        "--out",
        default=str(ROOT / "docs" / "benchmarks"),
        help="folder of results.json and chart.png",
    )
    parser.add_argument(
        "--page", default=str(ROOT / "docs" / "benchmarks.md"), help="Markdown report"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy runs")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated steps to run, of " + ", ".join(STEPS) + " (default: all)",
    )
    args = parser.parse_args(argv)
    only = {step for step in args.only.split(",") if step} or None
    if only is not None and not only <= set(STEPS):
        parser.error(f"unknown steps {sorted(only - set(STEPS))}; choose from {list(STEPS)}")
    names = [name for name in args.systems.split(",") if name]
    unknown = [name for name in names if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {sorted(SYSTEMS)}")

    signal.signal(signal.SIGTERM, stop_on_signal)
    out_dir = Path(args.out)
    results = run(names, args.mode, out_dir, not args.no_profile, only)
    report.write(results, out_dir, Path(args.page))
    log(f"wrote {out_dir / 'results.json'}, {out_dir / 'chart.png'} and {args.page}")


if __name__ == "__main__":
    main()
