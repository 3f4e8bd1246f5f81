# Builds a wshub store with ROOMS rooms x EVENTS events, in the format
# src/engine/sqlite.rs writes, to time how long a hub takes to open it.
import sqlite3, sys, uuid, time, os
path, rooms, events = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.makedirs(path, exist_ok=True)
db = sqlite3.connect(os.path.join(path, "wshub.db"))
db.executescript("""
PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rooms (name TEXT PRIMARY KEY, last_seq INTEGER NOT NULL, oldest_seq INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (room TEXT NOT NULL, seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, json BLOB NOT NULL, PRIMARY KEY (room, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (at_ms);
CREATE TABLE IF NOT EXISTS keys (key TEXT PRIMARY KEY, at_ms INTEGER NOT NULL, id TEXT NOT NULL, seq INTEGER, recipients INTEGER NOT NULL, correlation_id TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS keys_by_time ON keys (at_ms);
""")
db.execute("INSERT INTO meta VALUES ('format','wshub-store-1'),('epoch',?)", (str(uuid.uuid4()),))
now = int(time.time() * 1000)
for r in range(rooms):
    name = f"room-{r:06d}"
    db.executemany("INSERT INTO events VALUES (?,?,?,?)",
        ((name, s, now, ('{"type":"t","payload":{"pad":"%s"},"correlation_id":"c","timestamp":"2026-12-01T00:00:00.000Z","id":"%s","room":"%s","seq":%d}' % ("x"*128, uuid.uuid4(), name, s)).encode()) for s in range(1, events + 1)))
    db.execute("INSERT INTO rooms VALUES (?,?,1)", (name, events))
    if r % 5000 == 0:
        db.commit()
db.commit(); db.execute("PRAGMA wal_checkpoint(TRUNCATE)"); db.close()
print("built", rooms, "x", events, os.path.getsize(os.path.join(path, "wshub.db")) >> 20, "MiB")
