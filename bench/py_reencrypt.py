"""The Python peer of bench/reencrypt.sh: the seed documents' re-encryption
procedure — read the rows, Fernet-decrypt each value (MultiFernet: new and
old key), Fernet-encrypt it under the new key, update the row — with psycopg 3
and `cryptography`. Two ways:

  loop          the procedure as written: for each row one UPDATE, one commit
                per 1 000 rows (rows read with a server-side cursor);
  executemany   a tuned variant: 5 000 rows at a time, `executemany`
                (psycopg pipelines it), one commit per batch.

    python bench/py_reencrypt.py DSN TABLE NEW_KEY OLD_KEY MODE  -> prints rows/s
"""
import sys
import time

import psycopg
from cryptography.fernet import Fernet, MultiFernet

dsn, table, new_key, old_key, mode = sys.argv[1:6]
new = Fernet(new_key.encode())
both = MultiFernet([new, Fernet(old_key.encode())])
BATCH = 1000 if mode == "loop" else 5000
t0 = time.perf_counter()
n = 0
with psycopg.connect(dsn) as read, psycopg.connect(dsn) as write:
    with read.cursor(name="rows") as cur:
        cur.itersize = BATCH
        cur.execute(f"SELECT id, secret FROM {table} ORDER BY id")
        sql = f"UPDATE {table} SET secret = %s WHERE id = %s"
        while True:
            rows = cur.fetchmany(BATCH)
            if not rows:
                break
            with write.cursor() as w:
                if mode == "loop":
                    for i, s in rows:
                        w.execute(sql, (new.encrypt(both.decrypt(s.encode())).decode(), i))
                else:
                    w.executemany(
                        sql, [(new.encrypt(both.decrypt(s.encode())).decode(), i) for i, s in rows]
                    )
            write.commit()
            n += len(rows)
dt = time.perf_counter() - t0
print(f"{n / dt:.0f}")
