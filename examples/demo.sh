#!/usr/bin/env bash
# Two teams share one queue: two sim workers, four jobs, a live table until they finish.
# Uses the embedded Redis (unless SPEEDQ_REDIS_URL is set) and the sim backend (no GPU).
set -euo pipefail

workers=()
cleanup() { for pid in "${workers[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

for i in 1 2; do
  speedq worker --backend sim --name "demo-worker-$i-$$" >/dev/null 2>&1 &
  workers+=("$!")
done

jobs=(
  "$(speedq submit --team alpha --backend sim --smoke --force-restart)"
  "$(speedq submit --team alpha --backend sim --model d12 --run-name d12-demo --force-restart)"
  "$(speedq submit --team beta --backend sim --smoke --priority high --force-restart)"
  "$(speedq submit --team beta --backend sim --model d10 --run-name d10-demo --force-restart)"
)

speedq ls --limit "${#jobs[@]}" --watch

echo
echo "Logs:"
for job in "${jobs[@]}"; do
  speedq status "$job" --json | python3 -c 'import json, sys
r = json.load(sys.stdin); s = r["spec"]; log = (r.get("log") or {}).get("command", "no log yet")
print("  %s %s/%s %s: %s" % (r["id"], s["team"], s["run_name"], r["state"], log))'
done
echo
echo "More: speedq status ${jobs[0]}   speedq logs ${jobs[0]} --tail 20"
