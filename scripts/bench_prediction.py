"""Does the model calibrated here predict this machine? Measured / predicted per-step
communication time, per strategy, for an MLP of >= 1 M parameters (a benchmark, not a test).

    python scripts/bench_prediction.py                 # N = 2, 3 runs, hidden 1024 (1.06 M params)
    python scripts/bench_prediction.py --ranks 4 --runs 5 --recalibrate
    python scripts/bench_prediction.py --runs 5 --recalibrate --compact-memory   # root, Linux

Each run is ``mpiexec -n N python scripts/compare.py`` (float32 MLP, SGD) in its own
processes, predicted by the profile it calibrated: the cached one for this host and N, or
with ``--recalibrate`` one measured afresh at the start of every run (this shared
machine's speed drifts over minutes; a fresh calibration pairs each run with the machine
it ran on). Measured: the
slowest rank's transfer per step (time inside collective calls after their last
participant entered), median over steps; predicted:
alpha-beta-gamma plus per-call overhead over the step's collectives, serialised when ranks
outnumber cores. Prints, per strategy, the median ratio over runs with its min-max, and
the machine's load (a loaded machine's numbers say so).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchutil import compact_memory, memory_state  # noqa: E402
from minidist.report.summary import load_run  # noqa: E402
from minidist.report.timing import calibrated_profile, model_rows  # noqa: E402


def one_run(args, out: Path):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec if mpiexec.exists() else "mpiexec"), "-n", str(args.ranks), sys.executable,
           str(ROOT / "scripts" / "compare.py"), "--hidden", str(args.hidden), "--steps", str(args.steps),
           "--dtype", "float32", "--strategies", args.strategies, "--no-report", "--out", str(out)]
    if args.recalibrate:
        cmd.append("--recalibrate")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, timeout=600)
    header, steps = load_run(out)
    return header, model_rows(header, steps, calibrated_profile(header))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--hidden", type=int, default=1024, help="MLP width (1024: 1.06 M parameters)")
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--strategies", default="dp,hub,ddp,ddp-no-overlap")
    p.add_argument("--recalibrate", action="store_true")
    p.add_argument("--compact-memory", action="store_true",
                   help="have Linux compact memory before each run (root; docs/timing.md says why)")
    args = p.parse_args(argv)
    load = os.getloadavg()[0]  # before our own runs add to it
    ratios: dict = {}
    first = None
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            if args.compact_memory and not compact_memory():
                print("--compact-memory: /proc/sys/vm/compact_memory is not writable here (root, Linux); "
                      "running without", flush=True)
            header, rows = one_run(args, Path(tmp) / f"run{i}.jsonl")
            first = first or header
            prof = header["calibration"]["profile"]
            print(f"run {i + 1} ({memory_state() or 'memory state unknown'}): beta {1e9 * prof['beta']:.3f} ns/B, gamma {1e9 * prof['gamma']:.3f} ns/B; "
                  + ", ".join(f"{r['strategy']} {r['measured_ms']:.2f}/{r['predicted_ms']:.2f} ms" for r in rows),
                  flush=True)
            for r in rows:
                ratios.setdefault(r["strategy"], []).append((r["ratio"], r["measured_ms"], r["predicted_ms"]))
    cal = first["calibration"]
    print(f"{header['parameters']:,} parameters (float32), N = {args.ranks} on {header['cores']} cores, "
          f"{args.runs} runs of {args.steps} steps; load average before them {load:.1f} "
          f"({'LOADED' if load > 0.5 * (os.cpu_count() or 1) else 'quiet'})")
    prof = cal["profile"]
    print(f"first run's profile: alpha {1e6 * prof['alpha']:.2f} us, beta {1e9 * prof['beta']:.3f} ns/B, gamma "
          f"{1e9 * prof['gamma']:.3f} ns/B, call {1e6 * prof['call_overhead']:.1f} us; {cal['verdict']}")
    expected = prof["alpha"] + prof["call_overhead"] / (2 * (args.ranks - 1))
    print(f"a ring step with all {args.ranks} ranks running: {1e6 * cal['step_latency_all']:.1f} us "
          f"(the model: {1e6 * expected:.1f} us)" + ("; ranks wait for a core between dependent "
          "messages, which the model leaves out" if cal["step_latency_all"] > 3 * expected else ""))
    print(f"{'strategy':16} {'measured ms':>12} {'predicted ms':>13} {'ratio':>7} {'min-max':>12}  target 0.67-1.5")
    for name, values in ratios.items():
        r = [v[0] for v in values]
        verdict = "within" if 0.67 <= median(r) <= 1.5 else "OUTSIDE"
        print(f"{name:16} {median(v[1] for v in values):12.3f} {median(v[2] for v in values):13.3f} "
              f"{median(r):7.2f} {min(r):5.2f}-{max(r):<6.2f}  {verdict}")


if __name__ == "__main__":
    main()
