#!/usr/bin/python3
"""Attributes a perf profile of a backend running pg_envelope decrypt scans.

Reads `perf script -F ip,sym,dso` output (DWARF call graphs, leaf frame first) on
stdin and prints where the backend's time went, as a share of all samples and as an
estimate in microseconds per row (share x the measured on-CPU us/row passed as argv[1]).

Buckets are disjoint: each sample goes to the first bucket whose marker frame is on
its stack, in the order listed. Standard library only (Debian's /usr/bin/python3).
"""
import collections
import sys

US_PER_ROW = float(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1] else None

DECRYPT = "decrypt_field"
# (label, markers): inside decrypt_field, by the OpenSSL entry point on the stack.
INSIDE = [
    ("OpenSSL EVP_CIPHER_CTX_ctrl (set GCM tag)", ("EVP_CIPHER_CTX_ctrl",)),
    ("OpenSSL EVP_DecryptInit_ex (new nonce)", ("EVP_CipherInit_ex", "EVP_DecryptInit_ex")),
    ("OpenSSL EVP_DecryptUpdate (AAD + ciphertext)", ("EVP_DecryptUpdate",)),
    ("OpenSSL EVP_DecryptFinal_ex (tag check)", ("EVP_DecryptFinal_ex",)),
    ("palloc of the result", ("pg_alloc", "palloc_extended", "palloc")),
    ("DEK lookup (keyring::for_decrypt)", ("for_decrypt",)),
]
OUTSIDE = [
    ("length() of the decrypted text (textlen)", ("textlen",)),
    ("heap scan (heap_getnextslot, buffers, tuple deform)", ("heap_getnextslot", "SeqNext", "slot_getsomeattrs_int",
                                                              "heapgetpage", "ReadBufferExtended")),
    ("fmgr/executor/aggregate/memory-context reset (rest)", ("PostgresMain",)),
]


def parse(stream):
    sample = []
    for line in stream:
        line = line.strip()
        if not line:
            if sample:
                yield sample
                sample = []
            continue
        parts = line.split(None, 1)
        rest = parts[1] if len(parts) > 1 else ""
        dso = ""
        if rest.endswith(")") and " (" in rest:
            rest, dso = rest.rsplit(" (", 1)
            dso = dso[:-1].rsplit("/", 1)[-1]
        sample.append((rest, dso))
    if sample:
        yield sample


def has(frames, markers):
    return any(any(m in f for m in markers) for f, _ in frames)


def main():
    buckets = collections.Counter()
    leaf_in_decrypt = collections.Counter()
    total = 0
    for s in parse(sys.stdin):
        total += 1
        if has(s, (DECRYPT,)):
            for label, markers in INSIDE:
                if has(s, markers):
                    buckets["  decrypt_field > " + label] += 1
                    break
            else:
                buckets["  decrypt_field > pg_envelope's own code (parse, AAD, guards, fmgr glue)"] += 1
            leaf, dso = s[0]
            if "strcmp" in leaf or "OSSL_PARAM" in leaf or "get_iv_length" in leaf or "CTX_ctrl" in leaf:
                leaf_in_decrypt["OpenSSL 3 parameter plumbing (OSSL_PARAM_locate/strcmp/ctrl/get_iv_length)"] += 1
            elif "gcm128" in leaf or "aesni" in leaf or "ghash" in leaf or (dso.startswith("libcrypto") and
                                                                            (leaf.startswith("0x") or leaf == "[unknown]")):
                leaf_in_decrypt["AES/GHASH kernels + unnamed (stripped) libcrypto internals"] += 1
            elif dso.startswith("libcrypto"):
                leaf_in_decrypt["other named libcrypto functions (EVP_* bodies, CRYPTO_memcmp, ...)"] += 1
            elif dso.startswith("pg_envelope"):
                leaf_in_decrypt["pg_envelope.so"] += 1
            else:
                leaf_in_decrypt["postgres/libc/kernel below decrypt_field"] += 1
            continue
        for label, markers in OUTSIDE:
            if has(s, markers):
                buckets[label] += 1
                break
        else:
            buckets["unattributed (stack not unwound to PostgresMain)"] += 1
    if total == 0:
        print("no samples")
        return
    inside = sum(v for k, v in buckets.items() if k.startswith("  decrypt_field"))
    rows = [("envelope.decrypt_field() total", inside)]
    rows += sorted(((k, v) for k, v in buckets.items() if k.startswith("  decrypt_field")), key=lambda kv: -kv[1])
    rows += sorted(((k, v) for k, v in buckets.items() if not k.startswith("  ")), key=lambda kv: -kv[1])
    width = max(len(k) for k, _ in rows) + 2
    hdr = "%-*s %8s" % (width, "where (inclusive, disjoint buckets)", "share")
    if US_PER_ROW:
        hdr += "  %12s" % "~cpu us/row"
    print(hdr)
    for k, v in rows:
        line = "%-*s %7.1f%%" % (width, k, 100.0 * v / total)
        if US_PER_ROW:
            line += "  %12.3f" % (US_PER_ROW * v / total)
        print(line)
    print("%-*s %8d" % (width, "samples", total))
    if inside:
        print()
        print("leaf (self) time inside decrypt_field, by kind:")
        for k, v in leaf_in_decrypt.most_common():
            line = "  %-*s %7.1f%%" % (width - 2, k, 100.0 * v / total)
            if US_PER_ROW:
                line += "  %12.3f" % (US_PER_ROW * v / total)
            print(line)


if __name__ == "__main__":
    main()
