#!/usr/bin/python3
"""Measurements for bench/cache.sh (the shared DEK cache benchmark).

Run by bench/cache.sh against a throwaway cluster it started; standard library plus
Debian's python3-psycopg2 (and python3-cryptography, which the Vault emulator in
test/kms_emulators needs). Three subcommands:

  conn   --host SOCKDIR --port P --token-file F --out conn.json
         Starts the Vault Transit emulator in this process, configures pg_envelope to
         use it, and measures (1) connect + first decrypt of new connections with a
         cold and with a warm shared cache, KMS latency injected, and (2) KMS decrypt
         calls over many new connections with a warm shared cache (the emulator's
         counter is the oracle).
  hot    --host SOCKDIR --port P --rows N --runs R --label L --out hot.json
         Loads N rows of 74-byte text encrypted with the local KMS and times the
         plaintext scan and the decrypt scan (1 warm-up + R timed runs each).
  report conn.json [hot.json ...]
         Prints the final report table.

Every figure printed is measured here; nothing is estimated.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import psycopg2

REPO = Path(__file__).resolve().parents[1]

# N deterministic fake-PII strings of exactly 74 ASCII bytes (as in bench/bench.sql).
VALUE_SQL = ("left(format('%%s|%%s.%%s@example.com|+1-555-%%s', lpad(g::text, 7, '0'), md5(g::text), "
             "md5((g * 7)::text), lpad((g %% 10000)::text, 4, '0')), 74)")


def log(msg: str) -> None:
    print(msg, flush=True)


def pct(xs, q: float) -> float:
    """Percentile with linear interpolation between closest ranks (q in 0..1)."""
    s = sorted(xs)
    if not s:
        return float("nan")
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summary_ms(xs_s) -> dict:
    ms = [x * 1000.0 for x in xs_s]
    return {"n": len(ms), "median": statistics.median(ms), "p95": pct(ms, 0.95),
            "mean": statistics.fmean(ms), "min": min(ms), "max": max(ms)}


def connect(a, dbname: str = "postgres", user: str = "postgres"):
    conn = psycopg2.connect(host=a.host, port=a.port, user=user, dbname=dbname,
                            connect_timeout=10)
    conn.autocommit = True   # no implicit BEGIN round trip before the first query
    return conn


def steal_seconds():
    """Time the hypervisor ran something else while this VM's CPUs wanted to run (all
    CPUs, seconds since boot; /proc/stat 'steal'), or None."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def schedstat(pid: int):
    """(on-CPU ns, run-queue wait ns) of a server process, or (None, None)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            oncpu, wait = f.read().split()[:2]
        return int(oncpu), int(wait)
    except (OSError, ValueError):
        return None, None


# ----------------------------------------------------------------------------- conn

def cmd_conn(a) -> int:
    sys.path.insert(0, str(REPO / "test"))
    from kms_emulators import vault  # noqa: E402  (needs python3-cryptography)

    emu = vault.start(keys=("pg-envelope",))
    try:
        return conn_bench(a, emu)
    finally:
        emu.stop()


def conn_bench(a, emu) -> int:
    ctl = connect(a)
    cur = ctl.cursor()
    cur.execute("SET client_min_messages = warning")
    cur.execute("CREATE EXTENSION pg_envelope")
    cur.execute("SELECT envelope.create_kms('vault', 'vault-transit', %s::jsonb)",
                (json.dumps({"address": emu.url, "token_file": a.token_file}),))
    cur.execute("SELECT envelope.create_key('k1', kms => 'vault', kek => 'pg-envelope')")
    cur.execute("CREATE TABLE t (id integer PRIMARY KEY, p text NOT NULL, v envelope.encrypted_text NOT NULL)")
    cur.execute(f"INSERT INTO t SELECT g, x, envelope.encrypt_field(x, 'k1') "
                f"FROM (SELECT g, {VALUE_SQL} AS x FROM generate_series(1, %s) g) s", (a.rows,))
    cur.execute("VACUUM (FREEZE, ANALYZE) t")
    cur.execute("SELECT id, p FROM t")
    expected = dict(cur.fetchall())
    cur.execute("SELECT setting FROM pg_settings WHERE name = %s", ("envelope.cache_ttl",))
    ttl = cur.fetchone()[0]
    cur.execute("SELECT envelope.cache_flush()")
    emu.reset_stats()
    emu.inject_latency(a.latency_ms, count=None, op="decrypt")

    decrypt_q = "SELECT envelope.decrypt_field(v) FROM t WHERE id = %s"
    plain_q = "SELECT p FROM t WHERE id = %s"

    def one(kind: str, key: int):
        """One new connection: (connect+first query seconds, first query seconds,
        KMS decrypt calls it caused). 'cold' flushes the shared cache first."""
        if kind == "cold":
            cur.execute("SELECT envelope.cache_flush()")
        calls0 = emu.calls("decrypt")
        t0 = time.perf_counter()
        c = connect(a)
        t1 = time.perf_counter()
        k = c.cursor()
        k.execute(plain_q if kind == "plain" else decrypt_q, (key,))
        got = k.fetchone()[0]
        t2 = time.perf_counter()
        c.close()
        if got != expected[key]:
            raise SystemExit(f"cache_bench: wrong value for id {key} in a {kind} connection")
        return t2 - t0, t2 - t1, emu.calls("decrypt") - calls0

    # Part 1: interleaved rounds (cold, warm, plain), so drift in machine load hits all
    # three alike. 'warm' follows 'cold', whose connection just filled the shared cache.
    kinds = ("cold", "warm", "plain")
    log(f"  [1/2] new connections: {a.warmup} untimed + {a.conns} timed rounds of "
        f"(cold, warm, no-decrypt), KMS decrypt latency {a.latency_ms} ms ...")
    res = {k: {"total": [], "query": [], "kms": []} for k in kinds}
    n_keys = len(expected)
    for i in range(a.warmup + a.conns):
        for kind in kinds:
            total, query, kms = one(kind, i % n_keys + 1)
            if i >= a.warmup:
                res[kind]["total"].append(total)
                res[kind]["query"].append(query)
                res[kind]["kms"].append(kms)
    delayed = emu.delayed("decrypt")

    part1 = {}
    for kind in kinds:
        r = res[kind]
        part1[kind] = {"connect_first_query_ms": summary_ms(r["total"]),
                       "first_query_ms": summary_ms(r["query"]),
                       "kms_decrypt_calls": sum(r["kms"]), "connections": len(r["kms"]),
                       "connections_with_kms_call": sum(1 for x in r["kms"] if x > 0)}
        s = part1[kind]
        log(f"        {kind:5}: connect+first query median {s['connect_first_query_ms']['median']:8.2f} ms, "
            f"first query median {s['first_query_ms']['median']:8.2f} ms, "
            f"KMS decrypt calls {s['kms_decrypt_calls']} over {s['connections']} connections")

    # Part 2: many new connections, each decrypting one value. (a) the shared cache is
    # flushed once, then the connections run: the first one unwraps, the rest should
    # find the DEK in shared memory; (b) the same number again, cache already warm.
    part2 = {}
    for phase in ("from_flush", "warm"):
        if phase == "from_flush":
            log(f"  [2/2] {a.call_conns} new connections, each decrypting one value, after one cache_flush() ...")
            cur.execute("SELECT envelope.cache_flush()")
        else:
            log(f"        {a.call_conns} more new connections, shared cache already warm ...")
        cur.execute("SELECT hits, misses, kms_unwraps FROM envelope.stats")
        st0 = cur.fetchone()
        emu.reset_stats()
        totals, per_conn = [], []
        t_start = time.perf_counter()
        for i in range(a.call_conns):
            total, _query, kms = one("warm", i % n_keys + 1)
            totals.append(total)
            per_conn.append(kms)
        elapsed = time.perf_counter() - t_start
        calls = emu.calls("decrypt")
        cur.execute("SELECT hits, misses, kms_unwraps FROM envelope.stats")
        st1 = cur.fetchone()
        r = part2[phase] = {
            "connections": a.call_conns, "kms_decrypt_calls": calls, "kms_calls_all_ops": emu.calls(),
            "per_1000": calls * 1000.0 / a.call_conns,
            "connections_with_kms_call": [i + 1 for i, k in enumerate(per_conn) if k > 0][:10],
            "shared_hits": st1[0] - st0[0], "shared_misses": st1[1] - st0[1], "kms_unwraps": st1[2] - st0[2],
            "elapsed_s": elapsed, "connect_decrypt_ms": summary_ms(totals)}
        log(f"        KMS decrypt calls: {calls} over {a.call_conns} connections ({r['per_1000']:.2f} per 1000; "
            f"in connection(s) {', '.join('#%d' % c for c in r['connections_with_kms_call']) or '-'}); all KMS calls {r['kms_calls_all_ops']}; "
            f"envelope.stats: +{r['shared_hits']} hits, +{r['shared_misses']} misses, "
            f"+{r['kms_unwraps']} kms_unwraps; {elapsed:.1f} s")
    ctl.close()

    out = {"so_md5": a.so_md5, "latency_ms": a.latency_ms, "rows": n_keys, "warmup_rounds": a.warmup,
           "cache_ttl": ttl, "emulator_delayed_decrypts": delayed, "part1": part1, "part2": part2}
    Path(a.out).write_text(json.dumps(out, indent=1))
    return 0


# ----------------------------------------------------------------------------- hot

def cmd_hot_load(a) -> int:
    """Creates the hot-path data set in one cluster (with the build it runs)."""
    ctl = connect(a)
    cur = ctl.cursor()
    cur.execute("SET client_min_messages = warning")
    log(f"  [{a.label}] loading {a.rows} rows of 74-byte text and encrypting them (local KMS) ...")
    t0 = time.perf_counter()
    cur.execute("CREATE EXTENSION pg_envelope")
    cur.execute("SELECT envelope.create_key('bench')")
    cur.execute("CREATE TABLE plain (id integer PRIMARY KEY, v text NOT NULL)")
    cur.execute(f"INSERT INTO plain SELECT g, {VALUE_SQL} FROM generate_series(1, %s) g", (a.rows,))
    cur.execute("SELECT count(*) FROM plain WHERE octet_length(v) <> 74")
    if cur.fetchone()[0] != 0:
        raise SystemExit("cache_bench: generated values are not all 74 bytes")
    cur.execute("CREATE TABLE t (id integer PRIMARY KEY, v envelope.encrypted_text NOT NULL)")
    cur.execute("INSERT INTO t SELECT id, envelope.encrypt_field(v, 'bench') FROM plain")
    cur.execute("VACUUM (FREEZE, ANALYZE) plain")
    cur.execute("VACUUM (FREEZE, ANALYZE) t")
    cur.execute("CHECKPOINT")
    if a.role:
        # A role that decrypts as an application would: EXECUTE on decrypt_field, and
        # (from 0.2.0) the per-key decrypt privilege, checked on every row.
        cur.execute(f"CREATE ROLE {a.role} LOGIN")
        cur.execute(f"GRANT SELECT ON plain, t TO {a.role}")
        cur.execute(f"GRANT EXECUTE ON FUNCTION envelope.decrypt_field(envelope.encrypted_text, text) TO {a.role}")
        cur.execute("SELECT to_regprocedure('envelope.grant_key(text, regrole, text)') IS NOT NULL")
        if cur.fetchone()[0]:
            cur.execute("SELECT envelope.grant_key('bench', %s, 'decrypt')", (a.role,))
            log(f"  [{a.label}] role {a.role}: EXECUTE on decrypt_field and grant_key('bench', ..., 'decrypt')")
        else:
            log(f"  [{a.label}] role {a.role}: EXECUTE on decrypt_field (this build has no per-key privileges)")
    log(f"  [{a.label}] loaded in {time.perf_counter() - t0:.1f} s")
    ctl.close()
    return 0


def mapped_libraries(pid: int) -> set:
    """(device, inode, path) of every pg_envelope.so mapping of a process."""
    out = set()
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and "/pg_envelope.so" in parts[5]:
                out.add((parts[3], int(parts[4]), parts[5].strip()))
    return out


def cmd_hot_measure(a) -> int:
    """Times the plaintext and decrypt scans in one or more loaded clusters. With several
    clusters the runs are interleaved (round i: the plain scan in every cluster, then the
    decrypt scan in every cluster, the cluster order alternating between rounds), so
    drift in machine speed hits every build alike."""
    targets = []
    for spec in a.target:
        label, port, inode, md5 = spec.split("|")
        a_ = argparse.Namespace(host=a.host, port=int(port))
        conn = connect(a_, user=a.role or "postgres")
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid(), version()")
        pid, version = cur.fetchone()
        # The backend must run the library file that was installed when its cluster
        # started (for the "before" cluster that file has been replaced since: the
        # preloaded copy stays mapped and is never loaded again).
        with open(f"/proc/{pid}/status") as f:
            ppid = int(next(l for l in f if l.startswith("PPid:")).split()[1])
        libs, plibs = mapped_libraries(pid), mapped_libraries(ppid)
        inodes = {x[1] for x in libs}
        if inodes != {int(inode)} or libs != plibs:
            raise SystemExit(f"cache_bench: FAILED: backend of '{label}' maps {sorted(libs)}, expected inode "
                             f"{inode} as its postmaster ({sorted(plibs)})")
        targets.append({"label": label, "port": int(port), "so_md5": md5, "inode": int(inode),
                        "mapped": sorted(x[2] for x in libs), "conn": conn, "cur": cur, "pid": pid,
                        "version": version, "runs": {"plain_scan": [], "decrypt_scan": []}})
    queries = {"plain_scan": "SELECT sum(length(v)) FROM plain",
               "decrypt_scan": "SELECT sum(length(envelope.decrypt_field(v))) FROM t"}
    log(f"  timing: 1 warm-up + {a.runs} timed rounds; a round = the plain scan, then the decrypt scan, in each "
        f"of {len(targets)} cluster(s){' back to back, alternating the order' if len(targets) > 1 else ''} ...")
    for i in range(a.runs + 1):          # round 0 = warm-up, not used in the figures
        order = targets if i % 2 == 0 else list(reversed(targets))
        for label, sql in queries.items():
            for t in order:              # the builds' runs of one scan back to back
                st0 = steal_seconds()
                s0 = schedstat(t["pid"])
                t0 = time.perf_counter()
                t["cur"].execute(sql)
                answer = t["cur"].fetchone()[0]
                t1 = time.perf_counter()
                s1 = schedstat(t["pid"])
                st1 = steal_seconds()
                steal = st1 - st0 if None not in (st0, st1) else None
                cpu = (s1[0] - s0[0]) / 1e9 if None not in (s0[0], s1[0]) else None
                wait = (s1[1] - s0[1]) / 1e9 if None not in (s0[1], s1[1]) else None
                t["runs"][label].append({"run": i, "s": t1 - t0, "cpu_s": cpu, "wait_s": wait,
                                         "steal_s": steal, "answer": int(answer)})
    # Sanity: every run gave the same answer, the decrypted lengths equal the plaintext
    # lengths, and (one untimed extra scan) every decrypted value equals its plaintext.
    answers = {r["answer"] for t in targets for rs in t["runs"].values() for r in rs}
    if len(answers) != 1:
        raise SystemExit(f"cache_bench: FAILED: scans disagree: {sorted(answers)}")
    results = []
    for t in targets:
        t["cur"].execute("SELECT count(*) FROM plain p JOIN t USING (id) "
                         "WHERE envelope.decrypt_field(t.v) IS DISTINCT FROM p.v")
        mismatches = t["cur"].fetchone()[0]
        if mismatches:
            raise SystemExit(f"cache_bench: FAILED: {mismatches} decrypted values differ from their plaintext")
        t["conn"].close()
        r = {k: t[k] for k in ("label", "so_md5", "inode", "mapped", "version")}
        r.update(rows=a.rows, runs=a.runs, answer=answers.copy().pop(), scans={})
        for label, rs in t["runs"].items():
            timed = [x for x in rs if x["run"] > 0]
            wall = [x["s"] for x in timed]
            cpu = [x["cpu_s"] for x in timed if x["cpu_s"] is not None]
            wait = [x["wait_s"] for x in timed if x["wait_s"] is not None]
            steal = [x["steal_s"] for x in timed if x["steal_s"] is not None]
            r["scans"][label] = {
                "median_us_row": statistics.median(wall) * 1e6 / a.rows,
                "best_us_row": min(wall) * 1e6 / a.rows,
                "cpu_median_us_row": statistics.median(cpu) * 1e6 / a.rows if cpu else None,
                "cpu_wait_share": (sum(wait) / sum(wall)) if wait else None,
                "steal_share": (sum(steal) / (sum(wall) * (os.cpu_count() or 1))) if steal else None,
                "spread": max(wall) / min(wall) - 1.0,
                "runs_ms": [round(x * 1000, 1) for x in wall],
                "warmup_ms": round(rs[0]["s"] * 1000, 1)}
            sc = r["scans"][label]
            log(f"        {t['label'][:24]:24} {label:12}: median {sc['median_us_row']:.4f} us/row, "
                f"best {sc['best_us_row']:.4f}, runs {sc['runs_ms']} ms (warm-up {sc['warmup_ms']} ms)")
        results.append(r)
    log(f"        all {a.rows} decrypted values of each cluster checked against the plaintext")
    Path(a.out).write_text(json.dumps(results, indent=1))
    return 0


# ----------------------------------------------------------------------------- report

def fmt(x, nd=2):
    return "-" if x is None else f"{x:.{nd}f}"


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    out = [line, "| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |", line]
    for r in rows:
        out.append("| " + " | ".join(str(c).rjust(w) if i else str(c).ljust(w)
                                     for i, (c, w) in enumerate(zip(r, widths))) + " |")
    out.append(line)
    return "\n".join(out)


def cmd_report(a) -> int:
    conn = json.loads(Path(a.conn).read_text()) if a.conn else None
    hots = json.loads(Path(a.hot).read_text()) if a.hot else []

    if conn:
        p1 = conn["part1"]
        n = p1["warm"]["connections"]
        print(f"\n1. New connection: connect + first query, ms ({n} connections each, interleaved; "
              f"KMS decrypt latency injected: {conn['latency_ms']} ms; pg_envelope.so md5 {conn['so_md5'][:8]})")
        rows = []
        names = {"cold": "cold shared cache (cache_flush() before each)",
                 "warm": "warm shared cache",
                 "plain": "baseline: same first query without decrypt"}
        for kind in ("cold", "warm", "plain"):
            s = p1[kind]
            a_ = s["connect_first_query_ms"]
            q = s["first_query_ms"]
            rows.append([names[kind], fmt(a_["median"]), fmt(a_["p95"]), fmt(a_["mean"]),
                         fmt(q["median"]), fmt(q["p95"]), fmt(q["mean"]),
                         f"{s['kms_decrypt_calls']}/{s['connections']}"])
        print(table(["new connection", "conn+query med", "p95", "mean",
                     "first query med", "p95", "mean", "KMS decrypts"], rows))
        cold_q = p1["cold"]["first_query_ms"]["median"]
        warm_q = p1["warm"]["first_query_ms"]["median"]
        print(f"   first decrypt, cold - warm (medians): {cold_q - warm_q:.2f} ms "
              f"(injected KMS latency {conn['latency_ms']} ms); "
              f"cold / warm: {cold_q / warm_q:.1f}x")

        p2 = conn["part2"]
        cold = p1["cold"]
        print("\n2. KMS decrypt calls per 1,000 new connections, each decrypting one value "
              "(the Vault emulator's decrypt counter)")
        rows = []
        names = {"from_flush": "one cache_flush(), then the connections",
                 "warm": "warm shared cache (already filled)"}
        for phase in ("from_flush", "warm"):
            r = p2[phase]
            rows.append([names[phase], r["connections"], r["kms_decrypt_calls"], fmt(r["per_1000"]),
                         f"hits +{r['shared_hits']}, misses +{r['shared_misses']}, kms_unwraps +{r['kms_unwraps']}"])
        rows.append(["cold: cache_flush() before each (part 1)", cold["connections"], cold["kms_decrypt_calls"],
                     fmt(cold["kms_decrypt_calls"] * 1000.0 / cold["connections"]), "-"])
        print(table(["shared cache", "connections", "KMS decrypts", "per 1,000", "envelope.stats delta"], rows))
        for phase in ("from_flush", "warm"):
            r = p2[phase]
            cd = r["connect_decrypt_ms"]
            print(f"   {phase:10}: {r['connections']} connections in {r['elapsed_s']:.1f} s, connect+decrypt median "
                  f"{cd['median']:.2f} ms, p95 {cd['p95']:.2f} ms; KMS calls of any kind {r['kms_calls_all_ops']}"
                  + (f" (in connection #{', #'.join(map(str, r['connections_with_kms_call']))})"
                     if r["connections_with_kms_call"] else ""))
        ok = p2["warm"]["per_1000"] <= 1.0
        print(f"   goal, warm shared cache: <= 1 KMS decrypt per 1,000 new connections: {'MET' if ok else 'NOT MET'}")

    if hots:
        h0 = hots[0]
        print(f"\n3. Hot decrypt path, us/row: {h0['rows']} rows of 74-byte text, local KMS, one backend per "
              f"build; median of {h0['runs']} timed runs after 1 warm-up (best in brackets)"
              + (", builds interleaved run by run" if len(hots) > 1 else "")
              + "; cpu = backend on-CPU time")
        rows = []
        for h in hots:
            p = h["scans"]["plain_scan"]
            d = h["scans"]["decrypt_scan"]
            wait = max(x for x in (p["cpu_wait_share"], d["cpu_wait_share"], 0.0) if x is not None)
            steal = max(x for x in (p.get("steal_share"), d.get("steal_share"), 0.0) if x is not None)
            rows.append([h["label"], h["so_md5"][:8], f"{fmt(p['median_us_row'], 4)} ({fmt(p['best_us_row'], 4)})",
                         f"{fmt(d['median_us_row'], 4)} ({fmt(d['best_us_row'], 4)})",
                         fmt(d["cpu_median_us_row"], 4),
                         fmt(d["median_us_row"] - p["median_us_row"], 4),
                         f"{d['median_us_row'] / p['median_us_row']:.2f}x",
                         f"{max(p['spread'], d['spread']) * 100:.0f}%", f"{wait * 100:.1f}%", f"{steal * 100:.1f}%"])
        print(table(["build", "so md5", "plain scan", "decrypt scan", "decrypt cpu", "decrypt - plain",
                     "decrypt/plain", "run spread", "cpu-wait", "steal"], rows))
        worst = max([h["scans"][k]["cpu_wait_share"] or 0.0 for h in hots for k in h["scans"]])
        if worst > 0.02:
            print(f"   WARNING: the backend waited for a CPU during up to {worst * 100:.0f}% of a scan's runs "
                  f"(other load on the machine): compare the cpu column, or rerun on a quiet machine")
        spread = max(h["scans"][k]["spread"] for h in hots for k in h["scans"])
        if spread > 0.10:
            print(f"   WARNING: timed runs of the same scan differ by up to {spread * 100:.0f}% (the machine's speed "
                  f"changed during the measurement; on a VM this need not show as cpu-wait or steal)"
                  + (": prefer the per-round and best-run ratios below, or rerun" if len(hots) > 1 else ": rerun"))
        if len(hots) >= 2:
            b, c = hots[0]["scans"], hots[-1]["scans"]
            r_wall = c["decrypt_scan"]["median_us_row"] / b["decrypt_scan"]["median_us_row"]
            r_best = c["decrypt_scan"]["best_us_row"] / b["decrypt_scan"]["best_us_row"]
            r_plain = c["plain_scan"]["median_us_row"] / b["plain_scan"]["median_us_row"]
            r_cpu = (c["decrypt_scan"]["cpu_median_us_row"] / b["decrypt_scan"]["cpu_median_us_row"]
                     if c["decrypt_scan"]["cpu_median_us_row"] and b["decrypt_scan"]["cpu_median_us_row"]
                     else None)
            paired = statistics.median(x / y for x, y in zip(c["decrypt_scan"]["runs_ms"],
                                                             b["decrypt_scan"]["runs_ms"]))
            print(f"   after / before, decrypt scan: {paired:.3f}x (median of the per-round ratios: the two runs of "
                  f"a round ran back to back), {r_best:.3f}x (best runs: noise only adds time); "
                  f"{r_wall:.3f}x (medians), {fmt(r_cpu, 3)}x (cpu medians)")
            paired_plain = statistics.median(x / y for x, y in zip(c["plain_scan"]["runs_ms"],
                                                                   b["plain_scan"]["runs_ms"]))
            print(f"   after / before, plain scan (the same code in both builds, so ~1 unless the runs are noisy): "
                  f"{paired_plain:.3f}x (per-round), {r_plain:.3f}x (medians)")
        for h in hots:
            print(f"   {h['label']}: the measuring backend mapped {', '.join(h['mapped'])} (inode {h['inode']}, "
                  f"the file installed when its cluster started)")
        print("   every run of every scan returned the same sum, equal to the plaintext's; "
              "every decrypted value was checked against its plaintext")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("conn")
    c.add_argument("--host", required=True, help="socket directory")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--so-md5", default="?", help="md5 of the pg_envelope.so the server loaded")
    c.add_argument("--token-file", required=True)
    c.add_argument("--latency-ms", type=int, default=50)
    c.add_argument("--conns", type=int, default=50)
    c.add_argument("--call-conns", type=int, default=1000)
    c.add_argument("--rows", type=int, default=1000)
    c.add_argument("--warmup", type=int, default=3)
    h = sub.add_parser("hot-load")
    h.add_argument("--host", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--rows", type=int, default=1000000)
    h.add_argument("--label", required=True)
    h.add_argument("--role", default="", help="also create this login role, allowed to decrypt")
    m = sub.add_parser("hot-measure")
    m.add_argument("--host", required=True)
    m.add_argument("--rows", type=int, default=1000000)
    m.add_argument("--runs", type=int, default=7)
    m.add_argument("--out", required=True)
    m.add_argument("--role", default="", help="scan as this role (made by hot-load --role), not postgres")
    m.add_argument("--target", action="append", required=True,
                   help="LABEL|PORT|INODE|MD5 of a loaded cluster and the library it loaded (repeatable)")
    r = sub.add_parser("report")
    r.add_argument("--conn")
    r.add_argument("--hot")
    a = p.parse_args()
    return {"conn": cmd_conn, "hot-load": cmd_hot_load, "hot-measure": cmd_hot_measure,
            "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
