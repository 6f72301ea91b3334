#!/usr/bin/env python3
"""weightwatcher 0.7.7 on the trained side of a pair: the per-layer spectral
analysis peer of resid's `analyze`. Tensors are loaded as a numpy state dict
(weightwatcher's own safetensors loader needs torch, which this venv lacks).

usage: weightwatcher_analyze.py TRAINED
"""
import json, sys, time
import weightwatcher as ww
from numpy_analyze import tensors

t0 = time.time()
state = {name: a for name, a in tensors(sys.argv[1])}
watcher = ww.WeightWatcher(model=state)
details = watcher.analyze()
print(json.dumps({"seconds": time.time() - t0, "layers": int(len(details))}))
