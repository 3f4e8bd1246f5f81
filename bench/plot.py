#!/usr/bin/env python3
"""Draws time-to-last-subscriber (p50 and p99) against subscriber count, one
line per server, from the JSON reports bench/sweep.sh writes, as an SVG
with no dependencies, and prints the same figures as a table.

    python3 bench/plot.py bench/results/sweep bench/results/time-to-last.svg
"""

import json
import math
import os
import sys

COLOURS = {"wshub": "#1f6feb", "node-ws": "#d1242f", "axum": "#8250df", "floor": "#6e7781"}


def load(directory):
    data = {}
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".json"):
            continue
        server, _, n = name[:-5].rpartition("-")
        try:
            with open(os.path.join(directory, name)) as f:
                report = json.load(f)
            fanout = report["latency"]["publish_to_all"]
            cpu = report["latency"]["cpu"]["server_us_per_delivery"]
            kib = report["memory"]["kib_per_connection"]
            data.setdefault(server, []).append((int(n), fanout["p50_ms"], fanout["p99_ms"], cpu, kib))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    for rows in data.values():
        rows.sort()
    return data


def svg(data, path):
    width, height, left, right, top, bottom = 760, 460, 70, 150, 30, 50
    points = [r for rows in data.values() for r in rows if r[1] and r[2]]
    if not points:
        raise SystemExit("no reports to plot")
    xs = [r[0] for r in points]
    ys = [y for r in points for y in (r[1], r[2])]
    x0, x1 = math.log10(min(xs)), math.log10(max(xs))
    y0, y1 = math.log10(max(min(ys), 0.01)), math.log10(max(ys))
    y0, y1 = math.floor(y0), math.ceil(y1)
    x1 = max(x1, x0 + 1)

    def px(n):
        return left + (math.log10(n) - x0) / (x1 - x0) * (width - left - right)

    def py(ms):
        return height - bottom - (math.log10(max(ms, 10 ** y0)) - y0) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="18" font-size="14">Time from publish to the last subscriber (ms), p50 solid, p99 dashed</text>']
    for e in range(int(y0), int(y1) + 1):
        y = py(10 ** e)
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{10 ** e:g}</text>')
    for n in sorted(set(xs)):
        x = px(n)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{height - bottom}" stroke="#eee"/>')
        out.append(f'<text x="{x:.1f}" y="{height - bottom + 16}" text-anchor="middle">{n:,}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 12}" text-anchor="middle">subscribers (one room)</text>')
    for i, (server, rows) in enumerate(sorted(data.items())):
        colour = COLOURS.get(server, "#000")
        for column, dash in ((1, ""), (2, ' stroke-dasharray="5,4"')):
            pts = " ".join(f"{px(r[0]):.1f},{py(r[column]):.1f}" for r in rows if r[column])
            out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>')
        y = top + 20 + i * 18
        out.append(f'<line x1="{width - right + 12}" x2="{width - right + 36}" y1="{y}" y2="{y}" stroke="{colour}" stroke-width="2"/>')
        out.append(f'<text x="{width - right + 42}" y="{y + 4}">{server}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    data = load(sys.argv[1])
    print(f"{'server':<8} {'subscribers':>11} {'p50 ms':>9} {'p99 ms':>9} {'µs/delivery':>12} {'KiB/conn':>9}")
    for server, rows in sorted(data.items()):
        for n, p50, p99, cpu, kib in rows:
            print(f"{server:<8} {n:>11,} {p50:>9.2f} {p99:>9.2f} {cpu or 0:>12.2f} {kib or 0:>9.2f}")
    svg(data, sys.argv[2])


if __name__ == "__main__":
    main()
