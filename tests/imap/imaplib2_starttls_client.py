"""Run by the system Python (which has offlineimap's imaplib2): THREADS threads each open
CONNECTIONS connections doing STARTTLS, CAPABILITY and LOGOUT, as offlineimap does; prints the
failures as JSON. imaplib2 reads in one thread and writes in another (the race the server
works around, ``hato.servers.imap.service``).

Usage: python3 imaplib2_starttls_client.py PORT CAFILE THREADS CONNECTIONS
"""

from __future__ import annotations

import json
import sys
import threading

import imaplib2  # type: ignore[import-not-found]


def main() -> None:
    port, cafile = int(sys.argv[1]), sys.argv[2]
    threads, connections = int(sys.argv[3]), int(sys.argv[4])
    failures: list[str] = []

    def one() -> None:
        try:
            client = imaplib2.IMAP4("127.0.0.1", port, timeout=10)
            client.starttls(ca_certs=cafile)
            client.capability()
            client.logout()
        except Exception as exc:  # every failure is reported, none raised
            failures.append(repr(exc)[:300])

    def worker() -> None:
        for _ in range(connections):
            one()

    running = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for thread in running:
        thread.start()
    for thread in running:
        thread.join(timeout=300)
    print(json.dumps({"failures": failures, "alive": sum(t.is_alive() for t in running)}))


if __name__ == "__main__":
    main()
