"""Pack many fine-tunes of one base in parallel on a Ray cluster.

    python examples/python/ray_pack_many.py BASE FINETUNES OUT [--address ADDR]
        [--bits-per-param X] [--threads-per-task N]

Each entry of the folder FINETUNES (a checkpoint folder or a .safetensors
file) is one fine-tune of BASE; each becomes one Ray task calling
`resid.pack` (lossless unless --bits-per-param), writing OUT/<name>.resid.
Tasks ask Ray for N CPUs and give resid that many threads, so a node runs
cores/N packs at once. Without --address a local Ray runtime starts here;
with `--address auto` (or ray://...) the tasks go to a running cluster,
whose nodes must see BASE, FINETUNES and OUT at the same paths (a shared file
system) and have resid-toolkit installed.
"""

import argparse
import os
import time
from pathlib import Path

import ray

import resid


@ray.remote
def pack_one(base, trained, out, bits_per_param, threads):
    t0 = time.perf_counter()
    rep = resid.pack(base, trained, out, lossless=bits_per_param is None,
                     bits_per_param=bits_per_param, threads=threads, progress=False)
    return {"trained": trained, "seconds": time.perf_counter() - t0,
            "bits_per_param": rep["bits_per_param"], "ratio": rep["ratio"],
            "residual_rel_error": rep["residual_rel_error"], "node": os.uname().nodename}


def fine_tunes(folder: Path):
    return [p for p in sorted(folder.iterdir()) if p.is_dir() or p.suffix == ".safetensors"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("base")
    ap.add_argument("finetunes")
    ap.add_argument("out")
    ap.add_argument("--address", default=None)
    ap.add_argument("--bits-per-param", type=float, default=None)
    ap.add_argument("--threads-per-task", type=int, default=1)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ray.init(address=a.address, include_dashboard=False, log_to_driver=False)
    task = pack_one.options(num_cpus=a.threads_per_task)
    base = str(Path(a.base).resolve())
    t0 = time.perf_counter()
    rows = ray.get([
        task.remote(base, str(ft.resolve()), str((out / f"{ft.stem}.resid").resolve()),
                    a.bits_per_param, a.threads_per_task)
        for ft in fine_tunes(Path(a.finetunes))
    ])
    wall = time.perf_counter() - t0
    for r in rows:
        print(f"{Path(r['trained']).name:<24} {r['bits_per_param']:7.3f} bits/param "
              f"{r['ratio']:6.2f}x  err {r['residual_rel_error']:.2e}  {r['seconds']:6.2f} s"
              f"  on {r['node']}")
    busy = sum(r["seconds"] for r in rows)
    cpus = ray.cluster_resources().get("CPU", 0)
    print(f"{len(rows)} fine-tunes packed in {wall:.2f} s wall ({busy:.2f} s of task time, "
          f"{cpus:.0f} CPUs)")
    ray.shutdown()


if __name__ == "__main__":
    main()
