"""A Python gRPC client, generated from proto/muster/v1 with grpcio-tools, runs the duty officer's
report -> watch -> acknowledge flow against a running Muster.

This is the proof that the proto files are a usable public API for a client that is not Rust: it
uses nothing but the generated stubs and plain grpcio. tests/interop/run.sh generates the stubs,
starts `muster up` and runs this; on its own:

    PYTHONPATH=<generated stubs> python flow.py --intake 127.0.0.1:50051 \
        --escalation 127.0.0.1:50052 --dispatch 127.0.0.1:50053 --token-file .muster/admin.token

Each step prints one line; the first failure prints its reason and exits with status 1. Every
call has a deadline, so a hung server fails the run instead of hanging it.
"""

import argparse
import os
import queue
import re
import sys
import threading
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from muster.v1 import escalation_pb2, escalation_pb2_grpc, events_pb2, intake_pb2, intake_pb2_grpc

# Deadlines, in seconds.
CALL_TIMEOUT_S = 10.0
READY_TIMEOUT_S = 90.0
# Grading by escalation and the booking by dispatch go over JetStream; on a loaded CI machine
# this takes well under a second, so this bound only catches a broken pipeline.
ASSIGNED_TIMEOUT_S = 60.0
ACKNOWLEDGED_TIMEOUT_S = 30.0
WATCH_TIMEOUT_S = READY_TIMEOUT_S + ASSIGNED_TIMEOUT_S + ACKNOWLEDGED_TIMEOUT_S

# The sample from the README and the Rust end-to-end tests: an explosion at a chemical plant in
# the Langang park with 12 deaths is grade II under Decree 493 (10 to 29 deaths), and grade II is
# led by the province.
KIND = "accident.hazardous_chemicals"
TOWNSHIP = "390202400"
DEATHS = 12
PROVINCE_CODE = "390000"
UNKNOWN_TOWNSHIP = "999999999"
INCIDENT_ID = re.compile(r"^INC-\d{8}-\d{6}$")
OFFICER = "Interop (Python client)"

passed = 0


class Failure(Exception):
    """A step did not get what the API promises."""


def step(message):
    """Counts and prints a step that passed."""
    global passed
    passed += 1
    print(f"interop: ok   {message}", flush=True)


def call_metadata(token_file):
    """The metadata every call sends: `authorization: Bearer <token>` with the admin token that
    `muster up` writes to <data-dir>/admin.token. This is the one place that reads the token.

    Muster refuses every call without it, so a missing file is a failure."""
    try:
        with open(token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except FileNotFoundError:
        raise Failure(f"no token file at {token_file}: `muster up` writes <data-dir>/admin.token")
    if not token:
        raise Failure(f"the token file {token_file} is empty")
    return (("authorization", f"Bearer {token}"),)


def describe(error):
    return f"{error.code().name}: {error.details()}"


def wait_ready(channels, metadata, muster_pid):
    """Waits until each service's gRPC health check answers SERVING (bounded)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    for name, channel in channels.items():
        health = health_pb2_grpc.HealthStub(channel)
        last = "no answer yet"
        while True:
            if muster_pid and not process_alive(muster_pid):
                raise Failure(f"muster (pid {muster_pid}) exited before {name} was ready")
            try:
                answer = health.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=2.0, metadata=metadata
                )
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    break
                last = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
            except grpc.RpcError as error:
                last = describe(error)
            if time.monotonic() >= deadline:
                raise Failure(f"{name} not SERVING within {READY_TIMEOUT_S:.0f} s (last: {last})")
            time.sleep(0.2)
    step("health: intake, escalation and dispatch are SERVING")


def process_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Watch:
    """WatchIncidents read on a thread into a queue, so the main thread can wait with a bound."""

    def __init__(self, intake, metadata):
        self.changes = queue.Queue()
        self.call = intake.WatchIncidents(
            intake_pb2.WatchIncidentsRequest(namespace="live"),
            timeout=WATCH_TIMEOUT_S,
            metadata=metadata,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for change in self.call:
                self.changes.put(change)
            self.changes.put(Failure("the watch stream ended early"))
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.changes.put(Failure(f"the watch stream failed: {describe(error)}"))

    def established(self):
        """Waits for the response headers: the server has subscribed, so no change is missed."""
        result = queue.Queue()
        threading.Thread(
            target=lambda: result.put(self.call.initial_metadata()), daemon=True
        ).start()
        try:
            result.get(timeout=CALL_TIMEOUT_S)
        except queue.Empty:
            raise Failure(f"WatchIncidents sent no headers within {CALL_TIMEOUT_S:.0f} s")
        # A stream refused at once (UNAUTHENTICATED, FAILED_PRECONDITION) has ended by now.
        if self.call.done() and self.call.code() != grpc.StatusCode.OK:
            raise Failure(f"WatchIncidents refused: {self.call.code().name}: {self.call.details()}")

    def until(self, incident_id, done, timeout_s, what):
        """Reads changes of `incident_id` until `done(change)` holds; returns that change."""
        deadline = time.monotonic() + timeout_s
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Failure(
                    f"{what}: not seen within {timeout_s:.0f} s "
                    f"(events seen for {incident_id}: {', '.join(seen) or 'none'})"
                )
            try:
                change = self.changes.get(timeout=left)
            except queue.Empty:
                continue
            if isinstance(change, Failure):
                raise change
            if change.incident.id != incident_id:
                continue
            seen.append(change.event_type)
            if done(change):
                return change

    def close(self):
        self.call.cancel()
        self.thread.join(timeout=CALL_TIMEOUT_S)


def no_token_is_unauthenticated(intake):
    """A call without the bearer token is refused with UNAUTHENTICATED, before anything is stored."""
    try:
        intake.ListIncidents(intake_pb2.ListIncidentsRequest(), timeout=CALL_TIMEOUT_S)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.UNAUTHENTICATED:
            raise Failure(f"no token: expected UNAUTHENTICATED, got {describe(error)}")
        step(f"ListIncidents without a token: UNAUTHENTICATED ({error.details()[:60]}...)")
        return
    raise Failure("ListIncidents without a token was answered")


def bad_request_is_invalid_argument(intake, metadata):
    """An unknown township is refused with INVALID_ARGUMENT, and the message names the field."""
    try:
        intake.ReportIncident(
            intake_pb2.ReportIncidentRequest(
                kind=KIND,
                township_code=UNKNOWN_TOWNSHIP,
                facts=events_pb2.Facts(deaths=1),
                reported_by=OFFICER,
            ),
            timeout=CALL_TIMEOUT_S,
            metadata=metadata,
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise Failure(f"unknown township: expected INVALID_ARGUMENT, got {describe(error)}")
        if "township_code" not in (error.details() or ""):
            raise Failure(f"unknown township: the message does not name township_code: {error.details()!r}")
        step(f"ReportIncident with township {UNKNOWN_TOWNSHIP}: INVALID_ARGUMENT ({error.details()})")
        return
    raise Failure(f"ReportIncident with the unknown township {UNKNOWN_TOWNSHIP} was accepted")


def report(intake, metadata):
    request_id = f"interop-{uuid.uuid4()}"
    request = intake_pb2.ReportIncidentRequest(
        namespace="live",
        kind=KIND,
        township_code=TOWNSHIP,
        facts=events_pb2.Facts(deaths=DEATHS),
        summary="Explosion at a chemical plant in the Langang park (interop test)",
        reported_by=OFFICER,
        request_id=request_id,
    )
    answer = intake.ReportIncident(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
    if not INCIDENT_ID.match(answer.incident_id) or answer.duplicate:
        raise Failure(f"ReportIncident answered {answer!r}; expected a new INC-yyyymmdd-nnnnnn id")
    step(f"ReportIncident: {answer.incident_id} ({KIND}, township {TOWNSHIP}, {DEATHS} deaths)")
    # The same request_id again is the same incident, not a second one.
    again = intake.ReportIncident(request, timeout=CALL_TIMEOUT_S, metadata=metadata)
    if again.incident_id != answer.incident_id or not again.duplicate:
        raise Failure(f"a retry with the same request_id answered {again!r}")
    step(f"ReportIncident retried with request_id {request_id}: the same incident, duplicate=true")
    return answer.incident_id


def graded_and_assigned(change):
    incident = change.incident
    return incident.HasField("grading") and len(incident.units.assignments) > 0


def check_graded_and_assigned(incident):
    grading = incident.grading
    grade = events_pb2.Grade.Name(grading.grade)
    lead_level = events_pb2.JurisdictionLevel.Name(grading.lead_level)
    if grading.grade != events_pb2.GRADE_II:
        raise Failure(f"graded {grade} ({grading.reason}); expected GRADE_II")
    if grading.lead_level != events_pb2.JURISDICTION_LEVEL_PROVINCE or grading.lead_jurisdiction_code != PROVINCE_CODE:
        raise Failure(f"lead {grading.lead_jurisdiction_code} {lead_level}; expected the province {PROVINCE_CODE}")
    step(
        f"WatchIncidents: {grade}, lead {grading.lead_jurisdiction_name} ({grading.lead_jurisdiction_code}, "
        f"{lead_level}), rule {grading.rule_id}"
    )
    if incident.status != intake_pb2.INCIDENT_STATUS_RESPONDING:
        raise Failure(f"status {intake_pb2.IncidentStatus.Name(incident.status)}; expected INCIDENT_STATUS_RESPONDING")
    types = {}
    for assignment in incident.units.assignments:
        types[assignment.unit_type] = types.get(assignment.unit_type, 0) + 1
    by_type = ", ".join(f"{count} {unit_type}" for unit_type, count in types.items())
    step(f"WatchIncidents: plan {incident.units.plan_id} assigned {len(incident.units.assignments)} units ({by_type})")


def acknowledge(escalation, incident_id, metadata):
    answer = escalation.Acknowledge(
        escalation_pb2.AcknowledgeRequest(namespace="live", incident_id=incident_id, officer=OFFICER),
        timeout=CALL_TIMEOUT_S,
        metadata=metadata,
    )
    command = answer.command
    if not command.acknowledged or command.acknowledged_by != OFFICER or command.ack_due_at_unix_ms != 0:
        raise Failure(f"Acknowledge answered {command!r}; expected acknowledged by {OFFICER!r}, no timer pending")
    if command.lead_jurisdiction_code != PROVINCE_CODE:
        raise Failure(f"Acknowledge: lead {command.lead_jurisdiction_code}; expected {PROVINCE_CODE}")
    step(f"Acknowledge: acknowledged by {command.acknowledged_by}, no acknowledgement timer pending")
    # A second acknowledgement is refused: the chain is already stopped.
    try:
        escalation.Acknowledge(
            escalation_pb2.AcknowledgeRequest(incident_id=incident_id, officer=OFFICER),
            timeout=CALL_TIMEOUT_S,
            metadata=metadata,
        )
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.FAILED_PRECONDITION:
            raise Failure(f"a second Acknowledge: expected FAILED_PRECONDITION, got {describe(error)}")
        step(f"Acknowledge again: FAILED_PRECONDITION ({error.details()})")
        return
    raise Failure("a second Acknowledge was accepted")


def check_acknowledged(intake, incident_id, metadata):
    answer = intake.GetIncident(
        intake_pb2.GetIncidentRequest(incident_id=incident_id), timeout=CALL_TIMEOUT_S, metadata=metadata
    )
    events = [entry.event_type for entry in answer.incident.timeline]
    for expected in ("reported", "graded", "units_assigned", "acknowledged"):
        if expected not in events:
            raise Failure(f"GetIncident: the timeline has no {expected!r} entry: {events}")
    step(f"GetIncident: timeline {' -> '.join(events)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intake", required=True, help="intake's gRPC address, host:port")
    parser.add_argument("--escalation", required=True, help="escalation's gRPC address")
    parser.add_argument("--dispatch", required=True, help="dispatch's gRPC address")
    parser.add_argument("--token-file", required=True, help="<data-dir>/admin.token of `muster up`")
    parser.add_argument("--muster-pid", type=int, help="fail fast if this process exits while waiting")
    args = parser.parse_args()

    channels = {
        "intake": grpc.insecure_channel(args.intake),
        "escalation": grpc.insecure_channel(args.escalation),
        "dispatch": grpc.insecure_channel(args.dispatch),
    }
    watch = None
    try:
        metadata = call_metadata(args.token_file)
        wait_ready(channels, metadata, args.muster_pid)
        intake = intake_pb2_grpc.IntakeServiceStub(channels["intake"])
        escalation = escalation_pb2_grpc.EscalationServiceStub(channels["escalation"])

        no_token_is_unauthenticated(intake)
        bad_request_is_invalid_argument(intake, metadata)

        # Watch first: the stream carries changes made after it is established.
        watch = Watch(intake, metadata)
        watch.established()
        step("WatchIncidents: stream open")

        incident_id = report(intake, metadata)
        change = watch.until(incident_id, graded_and_assigned, ASSIGNED_TIMEOUT_S, "graded with units assigned")
        check_graded_and_assigned(change.incident)

        acknowledge(escalation, incident_id, metadata)
        watch.until(
            incident_id,
            lambda c: c.event_type == "acknowledged",
            ACKNOWLEDGED_TIMEOUT_S,
            "the acknowledged event",
        )
        step("WatchIncidents: acknowledged")
        check_acknowledged(intake, incident_id, metadata)
    except Failure as failure:
        print(f"interop: FAIL {failure}", file=sys.stderr, flush=True)
        print(f"interop: {passed} passed, 1 failed", flush=True)
        return 1
    except grpc.RpcError as error:
        print(f"interop: FAIL unexpected gRPC error {describe(error)}", file=sys.stderr, flush=True)
        print(f"interop: {passed} passed, 1 failed", flush=True)
        return 1
    finally:
        if watch is not None:
            watch.close()
        for channel in channels.values():
            channel.close()
    print(f"interop: {passed} passed, 0 failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
