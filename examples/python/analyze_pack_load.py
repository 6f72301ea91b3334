"""resid from Python, end to end on a generated pair.

    python examples/python/analyze_pack_load.py [WORKDIR]

Generates a small Llama-shaped bf16 pair with `resid synth`, analyses the
residual, packs it lossless and at 0.25 bits per parameter, rebuilds it in
memory and checks the lossless rebuild is bit-exact, then reads one tensor
lazily. Needs `pip install resid-toolkit` (pandas is used when installed).
"""

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

import resid


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["resid", "synth", "--shape", "custom:4,256,688,2000", "--dtype", "bf16",
         "--residual", "sparse", "--out", str(work), "--quiet"],
        check=True,
    )
    base, trained = work / "base", work / "trained"

    r = resid.analyze(base, trained)
    try:
        import pandas as pd

        table = pd.DataFrame(r["tensors"])
        print(table[["name", "std", "kurtosis", "top1pct_energy", "pr"]].head(8).to_string())
    except ImportError:
        for t in r["tensors"][:8]:
            print(t["name"], t.get("kurtosis"))
    print("verdict:", {h: v.get("supported") for h, v in r["verdict"].items()})

    lossless = resid.pack(base, trained, work / "ft.resid", lossless=True)
    quarter = resid.pack(base, trained, work / "ft-q.resid", bits_per_param=0.25)
    print(f"lossless: {lossless['bits_per_param']:.3f} bits/param ({lossless['ratio']:.2f}x); "
          f"0.25 bits/param: residual error {quarter['residual_rel_error']:.4f}")

    state = resid.load(base, work / "ft.resid", framework="numpy")
    with resid.open(base, work / "ft.resid", framework="numpy") as f:
        name = f.keys()[1]
        one = f.get_tensor(name)
    assert np.array_equal(state[name], one)
    print(f"loaded {len(state)} tensors; {name}: {one.dtype} {one.shape}, bf16 values "
          f"{resid.bf16_to_float32(one).ravel()[:3]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="resid-")))
