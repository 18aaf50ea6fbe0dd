#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (JSON lines) into the table, the concurrency chart, and
the results section of BENCHMARKS.md. Every figure is the median of its runs."""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

results_path, root = Path(sys.argv[1]), Path(sys.argv[2])
values = defaultdict(list)
for line in results_path.read_text().splitlines():
    if line.strip():
        row = json.loads(line)
        values[(row["proxy"], row["key"], row["metric"])].append(float(row["value"]))


def median(proxy, key, metric):
    found = values.get((proxy, key, metric))
    return statistics.median(found) if found else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


# (metric, label, unit divisor, digits, lower is better)
ROWS = [
    ("chain_rps", "chain requests/s (keep-alive, 64 connections)", 1, 0, False),
    ("chain_p50_ms", "chain p50 latency, ms", 1, 2, True),
    ("chain_p99_ms", "chain p99 latency, ms", 1, 2, True),
    ("chain_cpu_us_a", "CPU per request in A (server mode), us", 1, 1, True),
    ("chain_cpu_us_b", "CPU per request in B (client mode), us", 1, 1, True),
    ("full_per_s", "full mTLS handshakes/s at A (8 clients)", 1, 0, False),
    ("full_cpu_us_a", "A's CPU per full mTLS handshake, us", 1, 0, True),
    ("resumed_per_s", "resumed handshakes/s at A", 1, 0, False),
    ("resumed_cpu_us_a", "A's CPU per resumed handshake, us", 1, 0, True),
    ("peak_rss_kib_a", "A peak RSS under keep-alive load, MiB", 1024, 1, True),
    ("peak_rss_kib_b", "B peak RSS under keep-alive load, MiB", 1024, 1, True),
    ("idle_rss_kib_a", "A RSS holding idle mTLS connections, MiB", 1024, 1, True),
    ("idle_bytes_per_conn_a", "A memory per idle mTLS connection, KiB", 1024, 1, True),
    ("upload_mib_s", "1 GiB upload through the chain, MiB/s", 1, 0, False),
    ("upload_peak_rss_kib_a", "A peak RSS during the upload, MiB", 1024, 1, True),
    ("upload_peak_rss_kib_b", "B peak RSS during the upload, MiB", 1024, 1, True),
]

keys = sorted({k for (_, k, _) in values}, key=lambda k: (k != "p256", k))
lines = []
for key in keys:
    lines.append(f"### {'ECDSA P-256' if key == 'p256' else 'RSA-2048'}")
    lines.append("")
    lines.append("| figure | certgate | nginx | certgate / nginx |")
    lines.append("|---|---:|---:|---:|")
    for metric, label, divisor, digits, _ in ROWS:
        ours, theirs = median("certgate", key, metric), median("nginx", key, metric)
        if ours is None and theirs is None:
            continue
        ratio = f"{ours / theirs:.2f}x" if ours is not None and theirs else "-"
        scale = lambda v: None if v is None else v / divisor
        lines.append(f"| {label} | {fmt(scale(ours), digits)} | {fmt(scale(theirs), digits)} | {ratio} |")
    naive = median("nginx-naive", key, "chain_rps")
    naive_a = median("nginx-naive", key, "chain_cpu_us_a")
    backend = median("backend", key, "chain_rps")
    lines.append(f"| nginx as the seed writes it (no upstream keep-alive): requests/s | | {fmt(naive)} | |")
    lines.append(f"| ... and its A's CPU per request (a resumed handshake each), us | | {fmt(naive_a, 0)} | |")
    lines.append(f"| backend alone (the ceiling), requests/s | {fmt(backend)} | | |")
    lines.append("")
table = "\n".join(lines)
print(table)

# Throughput and p99 against concurrency, as an SVG line chart.
sweep = sorted({int(m[len("sweep"):].split("_")[0]) for (_, _, m) in values if m.startswith("sweep")})


def chart(metric, title, x0, y0, width, height):
    series = {}
    for proxy in ("certgate", "nginx"):
        series[proxy] = [median(proxy, "p256", f"sweep{c}_{metric}") for c in sweep]
    top = max([v for s in series.values() for v in s if v is not None] + [1]) * 1.1
    parts = [f'<text x="{x0 + width / 2}" y="{y0 - 10}" text-anchor="middle" font-size="14">{title}</text>',
             f'<rect x="{x0}" y="{y0}" width="{width}" height="{height}" fill="none" stroke="#999"/>']
    for i, c in enumerate(sweep):
        x = x0 + (i + 0.5) * width / len(sweep)
        parts.append(f'<text x="{x}" y="{y0 + height + 16}" text-anchor="middle" font-size="11">{c}</text>')
    parts.append(f'<text x="{x0 + width / 2}" y="{y0 + height + 32}" text-anchor="middle" font-size="11">connections</text>')
    for frac in (0, 0.5, 1):
        y = y0 + height - frac * height
        parts.append(f'<text x="{x0 - 6}" y="{y + 4}" text-anchor="end" font-size="10">{top * frac:,.1f}</text>')
    for proxy, colour in (("certgate", "#1f77b4"), ("nginx", "#2ca02c")):
        points = [(x0 + (i + 0.5) * width / len(sweep), y0 + height - (v / top) * height)
                  for i, v in enumerate(series[proxy]) if v is not None]
        if points:
            parts.append('<polyline fill="none" stroke-width="2" stroke="%s" points="%s"/>'
                         % (colour, " ".join(f"{x:.1f},{y:.1f}" for x, y in points)))
            for x, y in points:
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>')
    return parts


if sweep:
    body = chart("rps", "requests/s through the chain (ECDSA P-256)", 70, 40, 380, 240)
    body += chart("p99_ms", "p99 latency, ms", 560, 40, 380, 240)
    body += ['<rect x="400" y="320" width="12" height="12" fill="#1f77b4"/>',
             '<text x="416" y="331" font-size="12">certgate</text>',
             '<rect x="490" y="320" width="12" height="12" fill="#2ca02c"/>',
             '<text x="506" y="331" font-size="12">nginx</text>']
    svg = ('<svg xmlns="http://www.w3.org/2000/svg" width="980" height="345" font-family="sans-serif">'
           '<rect width="100%" height="100%" fill="white"/>' + "".join(body) + "</svg>\n")
    (root / "bench/results/concurrency.svg").write_text(svg)

(root / "bench/results/latest.md").write_text(table + "\n")
benchmarks = root / "BENCHMARKS.md"
if benchmarks.exists():
    text = benchmarks.read_text()
    start, end = "<!-- results:start -->", "<!-- results:end -->"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        benchmarks.write_text(f"{head}{start}\n{table}\n{end}{tail}")
