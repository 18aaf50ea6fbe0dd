#!/usr/bin/env python3
"""Adds up `perf report --sort dso,sym` self-time percentages by crate (or by library), so a
flat profile of many small functions still shows where the time goes."""
import re
import sys
from collections import Counter

totals = Counter()
for line in sys.stdin:
    match = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
    if not match:
        continue
    percent, dso, symbol = float(match.group(1)), match.group(2), match.group(3).strip()
    if dso != "certgate":
        totals[dso] += percent
        continue
    symbol = symbol.lstrip("<").replace("_<", "")
    crate = re.split(r"::|\s", symbol, maxsplit=1)[0] or "?"
    if crate.startswith("impl") or crate.startswith("&"):
        crate = symbol.split(" as ")[0].lstrip("<&").split("::")[0]
    totals["certgate:" + crate] += percent
for name, percent in totals.most_common(25):
    print(f"{percent:7.2f}%  {name}")
