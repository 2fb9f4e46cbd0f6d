"""CLI: ``python3 -m kms_emulators <provider> [options]`` (PYTHONPATH=<repo>/test).

With ``--print-url`` the first stdout line is the bound URL and the second a
JSON object describing the emulator (tokens, credentials, keys).  The process
serves until SIGTERM/SIGINT, until ``--max-lifetime`` seconds pass, or (with
``--exit-on-stdin-eof``) until its stdin closes.  SIGUSR1 takes the emulator
down (the port refuses connections), SIGUSR2 brings it back up.

``python3 -m kms_emulators pki DIR`` writes ca.pem, server.pem, key.pem and
other-ca.pem into DIR and prints their paths as JSON.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time

from . import PROVIDERS, provider_module
from .tls import make_test_pki


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python3 -m kms_emulators",
                                description="Loopback KMS emulators for tests.")
    sub = p.add_subparsers(dest="provider", required=True)
    for name in PROVIDERS:
        sp = sub.add_parser(name, help=f"{name} emulator")
        sp.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any)")
        sp.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
        sp.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
        sp.add_argument("--tls-dir", help="create a test PKI in this directory (if ca.pem is "
                                          "missing) and serve HTTPS with it")
        sp.add_argument("--print-url", action="store_true",
                        help="print the URL (line 1) and a JSON description (line 2)")
        sp.add_argument("--max-lifetime", type=float, default=3600.0,
                        help="exit after this many seconds (0: never; default 3600)")
        sp.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="exit when stdin is closed (ties the emulator to its parent)")
        sp.add_argument("--verbose", action="store_true", help="log requests to stderr")
        provider_module(name).add_cli_args(sp)
    sp = sub.add_parser("pki", help="write a throwaway test PKI and exit")
    sp.add_argument("directory")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.provider == "pki":
        print(json.dumps(make_test_pki(args.directory).as_dict()), flush=True)
        return 0

    tls = None
    if args.tls_dir:
        from pathlib import Path
        d = Path(args.tls_dir)
        if not (d / "ca.pem").exists() or not (d / "key.pem").exists():
            make_test_pki(d)
        tls = (d / "server.pem", d / "key.pem")
    elif args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            print("--tls-cert and --tls-key go together", file=sys.stderr)
            return 2
        tls = (args.tls_cert, args.tls_key)

    emu = provider_module(args.provider).from_cli_args(args, port=args.port, tls=tls,
                                                       verbose=args.verbose)
    emu.start()
    done = threading.Event()

    def on_term(signum, frame):
        done.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    signal.signal(signal.SIGUSR1, lambda s, f: threading.Thread(target=emu.down,
                                                                daemon=True).start())
    signal.signal(signal.SIGUSR2, lambda s, f: threading.Thread(target=emu.up,
                                                                daemon=True).start())
    if args.exit_on_stdin_eof:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except OSError:
                pass
            done.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    if args.print_url:
        print(emu.url, flush=True)
        print(json.dumps({"provider": emu.provider, "url": emu.url, **emu.describe()}),
              flush=True)
    else:
        print(f"{args.provider} emulator listening on {emu.url}", file=sys.stderr, flush=True)

    # Poll instead of one long wait: a signal delivered to another thread only
    # runs its Python handler once the main thread wakes up.
    deadline = time.monotonic() + args.max_lifetime if args.max_lifetime > 0 else None
    try:
        while not done.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                break
            done.wait(0.1)
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
