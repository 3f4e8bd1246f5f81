import os, time, statistics, sys
path = sys.argv[1]; n = int(sys.argv[2]); size = int(sys.argv[3]); mode = sys.argv[4]
fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
if mode == "overwrite":
    os.write(fd, b"\0" * size * n); os.fsync(fd)
buf = b"x" * size; t = []
for i in range(n):
    os.lseek(fd, i * size, 0)
    a = time.perf_counter(); os.write(fd, buf); os.fdatasync(fd); t.append(time.perf_counter() - a)
os.close(fd); os.unlink(path); t.sort()
print(f"{mode} {size}B x{n}: median {statistics.median(t)*1e3:.3f} ms, p90 {t[int(n*.9)]*1e3:.3f} ms, p99 {t[int(n*.99)]*1e3:.3f} ms, mean {sum(t)/n*1e3:.3f} ms")
