"""Redis's own time per limiter script, from a SLOWLOG taken at 0 µs (see proxy-bench.sh).

    python3 loadtest/script-cost.py SLOWLOG.json REQUESTS

Scripts are told apart by their keys and arguments (settle's and sweep's third key is the usage
stream; sweep's first argument is the tenant id); a call's request count is its `n` argument
(admit: ARGV[1], settle: ARGV[3]).
"""
import json
import sys

entries = json.load(open(sys.argv[1]))
requests = int(sys.argv[2])
totals = {}
for entry in entries:
    duration, args = entry[2], entry[3]
    if args[0].lower() != "evalsha":
        name = args[0].lower()
        calls, _, micros = totals.get(name, (0, 0, 0))
        totals[name] = (calls + 1, 0, micros + duration)
        continue
    numkeys = int(args[2])
    keys, argv = args[3:3 + numkeys], args[3 + numkeys:]
    if len(keys) >= 3 and (keys[2].endswith(":usage:batched") or keys[2].endswith(":usage")):  # (older builds: ":usage")
        name, n = ("settle", int(argv[2])) if argv[0].isdigit() else ("sweep", 0)
    elif len(keys) >= 2 and keys[1].endswith(":spent"):
        name, n = "admit", int(argv[0])
    else:
        name, n = "other script", 0
    calls, count, micros = totals.get(name, (0, 0, 0))
    totals[name] = (calls + 1, count + n, micros + duration)
print(f"Redis time per script over {len(entries):,} logged commands, {requests:,} requests:")
scripts = ("admit", "settle", "sweep", "other script")
for name in scripts:
    if name not in totals:
        continue
    calls, count, micros = totals[name]
    batch = f", {count / calls:.1f} requests/call, {micros / count:.2f} µs/request in it" if count else ""
    print(f"  {name:<7}{calls:>8,} calls {micros / calls:7.1f} usec_per_call {micros / requests:6.2f} µs/request{batch}")
inner = sorted(((name, micros) for name, (_, _, micros) in totals.items() if name not in scripts), key=lambda item: -item[1])
print("  commands (inside the scripts and outside), µs/request: "
      + ", ".join(f"{name} {micros / requests:.2f}" for name, micros in inner[:8]))
