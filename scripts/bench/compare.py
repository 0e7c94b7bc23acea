#!/usr/bin/env python3
"""Pairs `bench` (impl=ours) and reference.py (impl=torch) lines and prints ratios ours/torch of
medians. Where a bench ran more than once per side (rounds), ratios are per round, then listed."""
import json
import sys
from collections import defaultdict

rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
groups = defaultdict(lambda: {"ours": [], "torch": []})
for r in rows:
    if "median_ms" in r and r.get("impl") in ("ours", "torch"):
        key = (r["bench"], r.get("op", ""))
        groups[key][r["impl"]].append(r["median_ms"])
print(f"{'bench':<48} {'ours ms':>10} {'torch ms':>10} {'ours/torch':>10}")
for (bench, op), g in groups.items():
    name = f"{bench} {op}".strip()
    for i, o in enumerate(g["ours"]):
        t = g["torch"][i] if i < len(g["torch"]) else None
        ratio = f"{o / t:10.2f}" if t else f"{'-':>10}"
        print(f"{name:<48} {o:10.1f} {t if t is not None else float('nan'):10.1f} {ratio}")
