"""Interleaved comparison of one FiRe-MPO-like LoRA step: firempo (the host attention kernel,
and the tensor-op blocked and dense attention) against PyTorch naive (TRL way) and smart (prefix once, KV cache). Run by hand, never in CI:

    cargo bench -p firempo-models --profile dev --bench alignment_step --no-run
    /tmp/venv/bin/python benches/pytorch/compare.py --rounds 3 [--threads 1] [--preload LIB]

Every round runs every (implementation, prefix, vocab) once, each in a fresh process (one warm-up
step, then --steps timed steps), so load drifts hit all implementations alike. Prints a markdown
table of the median and min step time over all timed steps of all rounds, and each process's
peak RSS (max over rounds); writes the raw JSON lines to --out.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys

SHAPES = [(96, 2048), (256, 2048), (600, 2048), (1024, 2048), (600, 32000)]
HERE = os.path.dirname(os.path.abspath(__file__))


def firempo_bin(target):
    hits = [p for p in glob.glob(os.path.join(target, "debug/deps/alignment_step-*"))
            if os.access(p, os.X_OK) and not p.endswith(".d")]
    if not hits:
        sys.exit("no alignment_step binary: run `cargo bench -p firempo-models --profile dev "
                 "--bench alignment_step --no-run` first (CARGO_TARGET_DIR=" + target + ")")
    return max(hits, key=os.path.getmtime)


def run(cmd, env):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    return json.loads(lines[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="PyTorch threads (burn-ndarray uses one)")
    ap.add_argument("--target", default=os.environ.get("CARGO_TARGET_DIR", "target"))
    ap.add_argument("--impls", default="firempo-host,firempo-blocked,pytorch-naive,pytorch-smart",
                    help="also firempo-dense (the dense reference attention), firempo-host_burn_dropout "
                         "(burn's dropout masks), firempo-host_tensor_swiglu, "
                         "firempo-host_tensor_rope (the SwiGLU gate, the rotary embedding in tensor ops)")
    ap.add_argument("--shapes", default=None, help="e.g. 96x2048,600x32000 (default: all five)")
    ap.add_argument("--preload", default=None, help="LD_PRELOAD for the firempo processes (an allocator)")
    ap.add_argument("--out", default="/tmp/alignment_step.jsonl")
    a = ap.parse_args()
    shapes = SHAPES if a.shapes is None else [tuple(map(int, s.split("x"))) for s in a.shapes.split(",")]
    impls = a.impls.split(",")
    binary = firempo_bin(a.target)
    env = dict(os.environ)
    rust_env = dict(env, **({"LD_PRELOAD": a.preload} if a.preload else {}))
    results = []
    with open(a.out, "w") as log:
        for r in range(a.rounds):
            for prefix, vocab in shapes:
                for impl in impls:
                    common = ["--prefix", str(prefix), "--vocab", str(vocab), "--steps", str(a.steps)]
                    if impl.startswith("firempo"):
                        cmd = [binary, "--kernel", impl.split("-", 1)[1], *common]
                        res = run(cmd, rust_env)
                        res["peak_rss_bytes"] = res.get("peak_rss_bytes", 0)
                    else:
                        cmd = [sys.executable, os.path.join(HERE, "alignment_step.py"),
                               "--way", impl.split("-")[1], "--threads", str(a.threads), *common]
                        res = run(cmd, env)
                    res["round"] = r
                    results.append(res)
                    log.write(json.dumps(res) + "\n")
                    log.flush()
                    print(f"round {r} {impl} {prefix}x{vocab}: {res['times']}", file=sys.stderr)

    def cell(impl, prefix, vocab):
        rows = [x for x in results if x["impl"] == impl and x["prefix"] == prefix and x["vocab"] == vocab]
        times = [t for x in rows for t in x["times"]]
        rss = max(x["peak_rss_bytes"] for x in rows) / 2**20
        return statistics.median(times), min(times), rss

    head = "| prefix, vocab | " + " | ".join(f"{i} median / min s (peak RSS MiB)" for i in impls)
    ratios = [(i, j) for i, j in [("firempo-host", "pytorch-naive"), ("firempo-host", "pytorch-smart"),
                                  ("firempo-host", "firempo-blocked"), ("firempo-host", "firempo-host_burn_dropout"),
                                  ("firempo-host", "firempo-host_tensor_swiglu"), ("firempo-host", "firempo-host_tensor_rope"),
                                  ("firempo-blocked", "firempo-dense")]
              if i in impls and j in impls]
    head += "".join(f" | {i.split('-', 1)[1]} / {j.split('-', 1)[1]}" for i, j in ratios) + " |"
    print(head)
    print("|" + " ---: |" * (1 + len(impls) + len(ratios)))
    for prefix, vocab in shapes:
        cells = {i: cell(i, prefix, vocab) for i in impls}
        line = f"| {prefix}, {vocab // 1000 if vocab >= 1000 else vocab}k | " if vocab >= 1000 else f"| {prefix}, {vocab} | "
        line += " | ".join(f"{m:.3f} / {mn:.3f} ({rss:.0f})" for m, mn, rss in cells.values())
        line += "".join(f" | {cells[i][0] / cells[j][0]:.2f}" for i, j in ratios) + " |"
        print(line)
    print(f"\nrounds {a.rounds} x steps {a.steps}; PyTorch threads {a.threads}; firempo {binary}"
          + (f" with LD_PRELOAD={a.preload}" if a.preload else ""))


if __name__ == "__main__":
    main()
