# 1,000,000 publishes across 1,000 rooms over keep-alive HTTP from 16
# threads; prints the store's file sizes every 50,000 publishes.
import http.client, json, os, sys, threading, time
host, port, store, total, rooms, threads = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
done = [0]; lock = threading.Lock(); failures = [0]
def sizes():
    return {f: os.path.getsize(os.path.join(store, f)) for f in os.listdir(store)}
def worker(t):
    c = http.client.HTTPConnection(host, port)
    n = t
    while True:
        with lock:
            if done[0] >= total: return
            done[0] += 1; i = done[0]
        body = json.dumps({"room": f"room-{i % rooms}", "type": "t", "payload": {"pad": "x" * 128, "i": i}})
        c.request("POST", "/api/events", body, {"Content-Type": "application/json"})
        r = c.getresponse(); r.read()
        if r.status != 202: failures[0] += 1
        if i % 50000 == 0:
            s = sizes(); print(f"{i:>8} publishes  {time.time()-t0:6.1f} s  " + "  ".join(f"{k} {v>>10} KiB" for k, v in sorted(s.items())), flush=True)
t0 = time.time()
ts = [threading.Thread(target=worker, args=(t,)) for t in range(threads)]
[t.start() for t in ts]; [t.join() for t in ts]
print(f"done: {total} publishes in {time.time()-t0:.1f} s, {failures[0]} not 202; sizes {sizes()}", flush=True)
