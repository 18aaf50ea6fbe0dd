#!/usr/bin/env python3
"""Turns bench/run.sh's raw results (JSON lines) into one table with certgate's ratio against
each peer, the concurrency chart, and the results section of BENCHMARKS.md. Every figure is
the median of its runs.

Usage: report.py [--print-only] RESULTS.jsonl ROOT
"""

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

args = sys.argv[1:]
print_only = "--print-only" in args
args = [a for a in args if a != "--print-only"]
results_path, root = Path(args[0]), Path(args[1])

values = defaultdict(list)
notes = {}
for line in results_path.read_text().splitlines():
    if not line.strip():
        continue
    row = json.loads(line)
    if "note" in row:
        notes[row["proxy"]] = row["note"]
    else:
        values[(row["proxy"], row["key"], row["metric"])].append(float(row["value"]))

BASE = "certgate"
KNOWN = ["certgate", "nginx", "haproxy", "caddy"]
NAMES = {"certgate": "certgate", "nginx": "nginx", "haproxy": "HAProxy", "caddy": "Caddy"}
NOT_COLUMNS = {"backend", "nginx-naive"}
PROTOCOLS = {"h2": "HTTP/2", "h1": "HTTP/1.1"}

seen = {p for (p, _, _) in values} - NOT_COLUMNS
proxies = [p for p in KNOWN if p in seen] + sorted(seen - set(KNOWN))
base = BASE if BASE in proxies else proxies[0]
peers = [p for p in proxies if p != base]
name = lambda p: NAMES.get(p, p)


def median(proxy, key, metric):
    found = values.get((proxy, key, metric))
    return statistics.median(found) if found else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def best_protocol(proxy, key):
    """The B->A protocol in which the proxy spends the least CPU per request, A and B added."""
    costs = {}
    for proto in PROTOCOLS:
        a = median(proxy, key, f"chain_{proto}_cpu_us_a")
        b = median(proxy, key, f"chain_{proto}_cpu_us_b")
        if a is not None and b is not None:
            costs[proto] = a + b
    return min(costs, key=costs.get) if costs else None


# (metric, label, unit divisor, digits, lower is better); "best_" metrics take each proxy's
# best protocol, "{p}" metrics are filled in per protocol.
HEADLINE = [
    ("best_cpu_us_a", "CPU per request in A (server mode), us", 1, 1, True),
    ("best_cpu_us_b", "CPU per request in B (client mode), us", 1, 1, True),
    ("best_rps", "chain requests/s (keep-alive, 64 connections)", 1, 0, False),
    ("best_p99_ms", "chain p99 latency, ms", 1, 2, True),
]
PER_PROTOCOL = [
    ("chain_{p}_rps", "chain requests/s", 1, 0, False),
    ("chain_{p}_p50_ms", "chain p50 latency, ms", 1, 2, True),
    ("chain_{p}_p99_ms", "chain p99 latency, ms", 1, 2, True),
    ("chain_{p}_cpu_us_a", "CPU per request in A, us", 1, 1, True),
    ("chain_{p}_cpu_us_b", "CPU per request in B, us", 1, 1, True),
    ("chain_{p}_h2load_rps", "chain requests/s, h2load (second instrument)", 1, 0, False),
    ("chain_{p}_h2load_cpu_us_a", "CPU per request in A, us, h2load", 1, 1, True),
    ("chain_{p}_h2load_cpu_us_b", "CPU per request in B, us, h2load", 1, 1, True),
]
REST = [
    ("Handshakes at A (loadgen, 8 clients, one request each)", [
        ("full_per_s", "full mTLS handshakes/s", 1, 0, False),
        ("full_cpu_us_a", "A's CPU per full mTLS handshake, us", 1, 0, True),
        ("resumed_per_s", "resumed handshakes/s", 1, 0, False),
        ("resumed_cpu_us_a", "A's CPU per resumed handshake, us", 1, 0, True),
    ]),
    ("Memory", [
        ("peak_rss_kib_a", "A peak RSS under keep-alive load, MiB", 1024, 1, True),
        ("peak_rss_kib_b", "B peak RSS under keep-alive load, MiB", 1024, 1, True),
        ("idle_rss_kib_a", "A RSS holding idle mTLS connections, MiB", 1024, 1, True),
        ("idle_bytes_per_conn_a", "A memory per idle mTLS connection, KiB", 1024, 1, True),
    ]),
    ("1 GiB upload through the chain (each proxy's default protocol)", [
        ("upload_mib_s", "throughput, MiB/s", 1, 0, False),
        ("upload_peak_rss_kib_a", "A peak RSS during the upload, MiB", 1024, 1, True),
        ("upload_peak_rss_kib_b", "B peak RSS during the upload, MiB", 1024, 1, True),
    ]),
]


def value_of(proxy, key, metric):
    """A figure and, for the headline, the protocol it was measured in."""
    if metric.startswith("best_"):
        proto = best_protocol(proxy, key)
        if proto is None:
            return None, None
        return median(proxy, key, f"chain_{proto}_{metric[len('best_'):]}"), proto
    return median(proxy, key, metric), None


def ratio(ours, theirs):
    return f"{ours / theirs:.2f}x" if ours is not None and theirs else "-"


def row(key, metric, label, divisor, digits, lower_is_better):
    figures = {p: value_of(p, key, metric) for p in proxies}
    if all(v is None for v, _ in figures.values()):
        return None
    cells = []
    for p in proxies:
        v, proto = figures[p]
        cell = fmt(None if v is None else v / divisor, digits)
        cells.append(f"{cell} ({PROTOCOLS[proto]})" if proto and v is not None else cell)
    ours = figures[base][0]
    ratios = [ratio(ours, figures[p][0]) for p in peers]
    known = [(figures[p][0], p) for p in peers if figures[p][0] is not None]
    best = ""
    if known and ours is not None:
        value, who = (min if lower_is_better else max)(known)
        best = f"{ratio(ours, value)} ({name(who)})"
    return f"| {label} | " + " | ".join(cells + ratios + [best]) + " |"


def section(title):
    return f"| **{title}** |" + " |" * (len(proxies) + len(peers) + 1)


keys = sorted({k for (_, k, _) in values if k}, key=lambda k: (k != "p256", k))
lines = []
for label in ("machine", "run", *proxies, "wrk"):
    if label in notes:
        lines.append(f"- {label if label in ('machine', 'run', 'wrk') else name(label)}: {notes[label]}")
lines.append("")
for key in keys:
    lines.append(f"### {'ECDSA P-256' if key == 'p256' else 'RSA-2048'}")
    lines.append("")
    header = ["figure"] + [name(p) for p in proxies] + [f"{name(base)} / {name(p)}" for p in peers]
    header.append(f"{name(base)} / best peer")
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (len(header) - 1))
    lines.append(section("Each proxy in its best configuration (B->A protocol with the least CPU per request)"))
    lines += [r for r in (row(key, *spec) for spec in HEADLINE) if r]
    for proto, proto_name in PROTOCOLS.items():
        found = [row(key, m.format(p=proto), *rest) for m, *rest in PER_PROTOCOL]
        found = [r for r in found if r]
        if found:
            lines.append(section(f"{proto_name} between B and A"))
            lines += found
    for title, specs in REST:
        found = [r for r in (row(key, *spec) for spec in specs) if r]
        if found:
            lines.append(section(title))
            lines += found
    naive = median("nginx-naive", key, "chain_h1_rps")
    naive_a = median("nginx-naive", key, "chain_h1_cpu_us_a")
    backend = median("backend", key, "chain_rps")
    blank = " |" * (len(proxies) + len(peers))
    if naive is not None:
        lines.append(f"| nginx as the seed writes it (no upstream keep-alive): requests/s, A's CPU per request (a resumed handshake each), us | {fmt(naive)}, {fmt(naive_a, 0)} |" + blank)
    if backend is not None:
        lines.append(f"| backend alone (the ceiling), requests/s | {fmt(backend)} |" + blank)
    lines.append("")
table = "\n".join(lines)
print(table)
if print_only:
    sys.exit(0)

# Throughput and p99 against concurrency, as an SVG line chart.
sweep = sorted({int(m[len("sweep"):].split("_")[0]) for (_, _, m) in values if m.startswith("sweep")})
COLOURS = ["#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b"]


def chart(metric, title, x0, y0, width, height):
    series = {p: [median(p, "p256", f"sweep{c}_{metric}") for c in sweep] for p in proxies}
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
    for proxy, colour in zip(proxies, COLOURS):
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
    for i, (proxy, colour) in enumerate(zip(proxies, COLOURS)):
        x = 300 + i * 100
        body += [f'<rect x="{x}" y="320" width="12" height="12" fill="{colour}"/>',
                 f'<text x="{x + 16}" y="331" font-size="12">{name(proxy)}</text>']
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
