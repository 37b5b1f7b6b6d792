"""The Python peer of bench/reencrypt.sh: the seed documents' re-encryption
procedure — read the rows, Fernet-decrypt each value (MultiFernet: new and
old key), Fernet-encrypt it under the new key, update the row — with psycopg 3
and `cryptography`, written the way a careful Python script would be:
a server-side cursor reading 5 000 rows at a time, `executemany` (pipelined)
updates, one commit per batch.

    python bench/py_reencrypt.py DSN TABLE NEW_KEY OLD_KEY  -> prints rows/s
"""
import sys
import time

import psycopg
from cryptography.fernet import Fernet, MultiFernet

dsn, table, new_key, old_key = sys.argv[1:5]
new = Fernet(new_key.encode())
both = MultiFernet([new, Fernet(old_key.encode())])
BATCH = 5000
t0 = time.perf_counter()
n = 0
with psycopg.connect(dsn) as read, psycopg.connect(dsn) as write:
    with read.cursor(name="rows") as cur:
        cur.itersize = BATCH
        cur.execute(f"SELECT id, secret FROM {table} ORDER BY id")
        while True:
            rows = cur.fetchmany(BATCH)
            if not rows:
                break
            out = [(new.encrypt(both.decrypt(s.encode())).decode(), i) for i, s in rows]
            with write.cursor() as w:
                w.executemany(f"UPDATE {table} SET secret = %s WHERE id = %s", out)
            write.commit()
            n += len(rows)
dt = time.perf_counter() - t0
print(f"{n / dt:.0f}")
