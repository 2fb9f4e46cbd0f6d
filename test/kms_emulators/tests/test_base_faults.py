"""Counters, fault injection, down/up and HTTP plumbing of the common base
(exercised through the Vault emulator, the simplest concrete provider)."""

import base64
import http.client
import json
import socket
import threading
import time

import pytest

from kms_emulators import vault
from kms_emulators.base import MAX_HANG_SECONDS, make_fault

import kmshttp

TOKEN = {"X-Vault-Token": "emulator-root-token"}
PT = base64.b64encode(b"data key bytes").decode()


def encrypt(emu, conn=None, timeout=5.0, key="pg-envelope", headers=TOKEN):
    return kmshttp.request(emu.url, "POST", f"/v1/transit/encrypt/{key}", {"plaintext": PT},
                           headers, timeout=timeout, conn=conn)


def admin(emu, method, sub, body=None):
    return kmshttp.request(emu.url, method, f"/__emulator/{sub}", body)


# --------------------------------------------------------------- plumbing

def test_keep_alive_reuses_one_connection_and_sets_content_length(vault_emulator):
    emu = vault_emulator
    conn = kmshttp.connect(emu.url)
    try:
        r1 = encrypt(emu, conn)
        sock = conn.sock
        r2 = encrypt(emu, conn)
        r3 = kmshttp.request(emu.url, "GET", "/v1/sys/health", conn=conn)
        assert conn.sock is sock, "server closed a keep-alive connection"
    finally:
        conn.close()
    for r in (r1, r2, r3):
        assert r.status == 200
        assert int(r.headers["Content-Length"]) == len(r.body)
    assert r1.json["data"]["ciphertext"] != r2.json["data"]["ciphertext"]


def test_chunked_request_body(vault_emulator):
    emu = vault_emulator
    conn = kmshttp.connect(emu.url)
    body = json.dumps({"plaintext": PT}).encode()
    conn.request("POST", "/v1/transit/encrypt/pg-envelope", body=iter([body[:7], body[7:]]),
                 headers={**TOKEN, "Transfer-Encoding": "chunked"}, encode_chunked=True)
    r = conn.getresponse()
    data = json.loads(r.read())
    conn.close()
    assert r.status == 200 and data["data"]["ciphertext"].startswith("vault:v1:")


def test_oversized_body_is_refused(vault_emulator):
    r = kmshttp.request(vault_emulator.url, "POST", "/v1/transit/encrypt/pg-envelope",
                        b"x" * (1 << 20 | 1), TOKEN)
    assert r.status == 413


def test_only_loopback_binding_allowed():
    with pytest.raises(ValueError):
        vault.VaultEmulator(host="0.0.0.0")


# --------------------------------------------------------------- counters

def test_counters_python_and_http(vault_emulator):
    emu = vault_emulator
    ct = encrypt(emu).json["data"]["ciphertext"]
    kmshttp.request(emu.url, "POST", "/v1/transit/decrypt/pg-envelope", {"ciphertext": ct}, TOKEN)
    encrypt(emu, headers={"X-Vault-Token": "wrong"})                 # rejected
    encrypt(emu, key="no-such-key")                                   # reached handler, 400
    kmshttp.request(emu.url, "GET", "/v1/nothing/here", headers=TOKEN)  # unrouted
    assert emu.calls("encrypt") == 2
    assert emu.calls("decrypt") == 1
    assert emu.calls() == 3
    assert emu.rejected("encrypt") == 1
    assert emu.errors("encrypt") == 1
    assert emu.rejected("<unrouted>") == 1
    stats = admin(emu, "GET", "stats").json
    assert stats["provider"] == "vault"
    assert stats["calls"] == {"decrypt": 1, "encrypt": 2}
    assert stats["rejected"] == {"<unrouted>": 1, "encrypt": 1}
    assert stats["totals"]["calls"] == 3
    # admin requests are not counted
    assert emu.calls() == 3
    assert admin(emu, "POST", "reset").status == 200
    assert emu.calls() == 0 and emu.rejected() == 0
    assert admin(emu, "GET", "stats").json["totals"] == {
        "calls": 0, "rejected": 0, "faulted": 0, "errors": 0, "delayed": 0}


def test_counters_are_thread_safe(vault_emulator):
    emu = vault_emulator
    n_threads, per_thread = 8, 5
    failures = []

    def worker():
        conn = kmshttp.connect(emu.url)
        try:
            for _ in range(per_thread):
                if encrypt(emu, conn).status != 200:
                    failures.append(1)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures
    assert emu.calls("encrypt") == n_threads * per_thread


# --------------------------------------------------------------- faults

def test_latency_next_n_requests_is_measurable(vault_emulator):
    emu = vault_emulator
    emu.inject_latency(300, count=2)
    took = []
    for _ in range(3):
        t0 = time.monotonic()
        assert encrypt(emu).status == 200
        took.append(time.monotonic() - t0)
    assert took[0] >= 0.29 and took[1] >= 0.29, took
    assert took[2] < 0.25, took
    assert emu.delayed("encrypt") == 2 and emu.calls("encrypt") == 3


def test_latency_for_all_requests_of_one_op(vault_emulator):
    emu = vault_emulator
    emu.inject_latency(200, op="decrypt")          # count=None: every decrypt
    t0 = time.monotonic()
    ct = encrypt(emu).json["data"]["ciphertext"]
    assert time.monotonic() - t0 < 0.18
    for _ in range(2):
        t0 = time.monotonic()
        r = kmshttp.request(emu.url, "POST", "/v1/transit/decrypt/pg-envelope",
                            {"ciphertext": ct}, TOKEN)
        assert r.status == 200 and time.monotonic() - t0 >= 0.19
    assert emu.faults() and emu.faults()[0]["count"] is None
    emu.clear_faults()
    assert emu.faults() == []


def test_http_error_next_n(vault_emulator):
    emu = vault_emulator
    emu.inject_http_error(503, count=2)
    r1, r2, r3 = encrypt(emu), encrypt(emu), encrypt(emu)
    assert (r1.status, r2.status, r3.status) == (503, 503, 200)
    assert r1.json == {"errors": ["Vault is sealed"]}
    assert emu.faulted("encrypt") == 2 and emu.calls("encrypt") == 1


def test_throttle_vault_429_with_retry_after(vault_emulator):
    emu = vault_emulator
    emu.inject_throttle(count=1, retry_after=3)
    r = encrypt(emu)
    assert r.status == 429
    assert r.headers["Retry-After"] == "3"
    assert "rate limit quota exceeded" in r.json["errors"][0]
    assert encrypt(emu).status == 200


def test_connection_reset_raises_connection_error(vault_emulator):
    emu = vault_emulator
    emu.inject_reset(count=1)
    with pytest.raises(ConnectionResetError):
        encrypt(emu)
    assert emu.faulted("encrypt") == 1
    assert encrypt(emu).status == 200


def test_hang_times_out_client_side_then_release(vault_emulator):
    emu = vault_emulator
    emu.inject_hang(count=1)
    t0 = time.monotonic()
    with pytest.raises((socket.timeout, TimeoutError)):
        encrypt(emu, timeout=0.5)
    assert 0.45 <= time.monotonic() - t0 < 2.0
    assert emu.wait_hanging(1, timeout=2)
    assert emu.release() == 1
    deadline = time.monotonic() + 2
    while emu.hanging and time.monotonic() < deadline:
        time.sleep(0.01)
    assert emu.hanging == 0
    assert encrypt(emu).status == 200
    assert emu.faulted("encrypt") == 1 and emu.calls("encrypt") == 1


def test_released_hang_closes_without_answer(vault_emulator):
    emu = vault_emulator
    emu.inject_hang()
    result = {}

    def client():
        try:
            encrypt(emu, timeout=5)
            result["r"] = "answered"
        except (http.client.RemoteDisconnected, ConnectionError) as e:
            result["r"] = type(e).__name__

    t = threading.Thread(target=client)
    t.start()
    assert emu.wait_hanging(1, timeout=2)
    emu.release()
    t.join(5)
    assert result["r"] in ("RemoteDisconnected", "ConnectionResetError")


def test_hang_is_bounded_by_max_seconds(vault_emulator):
    emu = vault_emulator
    emu.inject_hang(max_seconds=0.3)
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        encrypt(emu, timeout=5)
    assert 0.25 <= time.monotonic() - t0 < 3
    assert make_fault({"kind": "hang", "max_seconds": 10_000}).max_seconds == MAX_HANG_SECONDS


def test_stop_releases_hangs_promptly():
    emu = vault.start(keys=("pg-envelope",))
    emu.inject_hang()
    errors = []

    def client():
        try:
            encrypt(emu, timeout=10)
        except Exception as e:     # noqa: BLE001 - any failure is expected here
            errors.append(e)

    t = threading.Thread(target=client)
    t.start()
    assert emu.wait_hanging(1, timeout=2)
    t0 = time.monotonic()
    emu.stop()
    t.join(5)
    assert not t.is_alive() and errors
    assert time.monotonic() - t0 < 3


def test_fault_restricted_to_one_operation(vault_emulator):
    emu = vault_emulator
    ct = encrypt(emu).json["data"]["ciphertext"]
    emu.inject_http_error(500, count=1, op="decrypt")
    assert encrypt(emu).status == 200                  # not consumed by encrypt
    r = kmshttp.request(emu.url, "POST", "/v1/transit/decrypt/pg-envelope", {"ciphertext": ct},
                        TOKEN)
    assert r.status == 500 and r.json == {"errors": ["internal error"]}
    assert emu.faulted("decrypt") == 1 and emu.faulted("encrypt") == 0


def test_faults_via_http_admin_api(vault_emulator):
    emu = vault_emulator
    r = admin(emu, "POST", "faults", {"faults": [
        {"kind": "http_error", "status": 502, "count": 2, "op": "encrypt"},
        {"kind": "latency", "ms": 150, "count": 1, "op": "health"}]})
    assert r.status == 200 and len(r.json["added"]) == 2
    assert [f["kind"] for f in admin(emu, "GET", "faults").json["faults"]] == \
        ["http_error", "latency"]
    assert encrypt(emu).status == 502
    t0 = time.monotonic()
    assert kmshttp.request(emu.url, "GET", "/v1/sys/health").status == 200
    assert time.monotonic() - t0 >= 0.14
    assert encrypt(emu).status == 502
    assert encrypt(emu).status == 200
    assert admin(emu, "GET", "faults").json["faults"] == []
    # single-fault form, then DELETE clears
    assert admin(emu, "POST", "faults", {"kind": "throttle", "count": 5}).status == 200
    assert admin(emu, "DELETE", "faults").json == {"faults": []}
    assert encrypt(emu).status == 200
    # hang + release over HTTP
    admin(emu, "POST", "faults", {"kind": "hang"})
    with pytest.raises((socket.timeout, TimeoutError)):
        encrypt(emu, timeout=0.3)
    assert emu.wait_hanging(1, 2)
    assert admin(emu, "POST", "release").json == {"released": 1}


@pytest.mark.parametrize("spec", [
    {"kind": "explode"},
    {"kind": "http_error", "status": 404},
    {"kind": "latency", "ms": -5},
    {"kind": "reset", "count": 0},
])
def test_invalid_fault_specs_are_refused(vault_emulator, spec):
    r = admin(vault_emulator, "POST", "faults", spec)
    assert r.status == 400
    assert vault_emulator.faults() == []


def test_down_refuses_connections_and_up_restores_same_port(vault_emulator):
    emu = vault_emulator
    port = emu.port
    conn = kmshttp.connect(emu.url)
    assert encrypt(emu, conn).status == 200
    emu.down()
    assert emu.is_down
    with pytest.raises(ConnectionRefusedError):
        encrypt(emu)
    # the open keep-alive connection was shut down as well
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, http.client.CannotSendRequest)):
        encrypt(emu, conn)
    conn.close()
    emu.up()
    assert emu.port == port and not emu.is_down
    assert encrypt(emu).status == 200


def test_down_for_a_while_via_admin_api(vault_emulator):
    emu = vault_emulator
    r = admin(emu, "POST", "down", {"seconds": 0.5})
    assert r.status == 200
    with pytest.raises(ConnectionRefusedError):
        encrypt(emu)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            assert encrypt(emu).status == 200
            break
        except ConnectionRefusedError:
            time.sleep(0.05)
    else:
        pytest.fail("emulator did not come back up")
    assert admin(emu, "POST", "down", {}).status == 400      # seconds required
