#!/usr/bin/env python3
"""Which FORMAT.md rules do the golden files pin down?

Swaps one rule of resid_specdecode for a plausible misreading at a time and
counts the golden cases whose sha256 then changes. A variant that changes no
sha256 is a rule the golden files do not check (SPEC-GAPS.md, "Coverage").

    python sensitivity.py crates/resid-codec/tests/golden/v1
    python sensitivity.py crates/resid-codec/tests/golden/v2
"""

import contextlib
import io
import json
import math
import struct
import sys

import resid_specdecode as R

ORIG = {k: getattr(R, k) for k in ("frequency_table", "reconstruct_lossy", "from_f32_values",
                                   "decode_rans", "to_f32_values", "canonical_safetensors",
                                   "original_layout", "check_original_header")}


def freq_variant(tie_larger=False, order_by_w=False, bankers=False, reorder_each_pass=False,
                 floor_only=False):
    def frequency_table(present, q):
        TOTAL = 1 << 15
        w = {s: R.W[q[i]] for i, s in enumerate(present)}
        S = sum(w.values())
        f = {}
        for s in present:
            x = (w[s] * 32768) / S
            if bankers:
                v = round(x)
            elif floor_only:
                v = math.floor(x)
            else:
                v = math.floor(x + 0.5)
            f[s] = max(1, int(v))
        D = TOTAL - sum(f.values())
        key = (lambda s: (-w[s], s)) if order_by_w else (lambda s: (-f[s], s))
        if tie_larger:
            key = (lambda s: (-f[s], -s))
        order = sorted(present, key=key)
        while D != 0:
            for s in order:
                if D > 0:
                    add = min(D, max(1, (D * f[s]) // TOTAL))
                    f[s] += add
                    D -= add
                elif D < 0 and f[s] > 1:
                    take = min(-D, f[s] - 1, max(1, (-D * f[s]) // TOTAL))
                    f[s] -= take
                    D += take
                if D == 0:
                    break
            if reorder_each_pass:
                order = sorted(present, key=lambda s: (-f[s], s))
        start, acc = {}, 0
        for s in present:
            start[s] = acc
            acc += f[s]
        if acc != TOTAL:
            raise R.Refused("4.3", "variant: frequencies sum to %d" % acc)
        return f, start
    return frequency_table


def lossy_variant(no_skip=False, fma=False, add_not_sub=False, v_unrounded=False,
                  recon_alt=False, column_major=False):
    def reconstruct_lossy(t, qa, qb, qr, base_raw, dead_zone):
        enc = t["encoding"]
        rows, cols, rank = enc["rows"], enc["cols"], enc["rank"]
        fs, step, recon = enc["factor_step"], enc["step"], enc["recon"]
        f32 = R.f32
        A = [f32(v * fs) for v in qa]
        B = [f32(v * fs) for v in qb]
        r = [0.0] * (rows * cols)
        if rank > 0:
            for i in range(rows):
                acc = [0.0] * cols
                js = range(rank)
                for j in (reversed(js) if column_major else js):
                    a = A[i * rank + j]
                    if a == 0.0 and not no_skip:
                        continue
                    for c in range(cols):
                        b = B[j * cols + c]
                        if fma:
                            acc[c] = f32(acc[c] + a * b) if add_not_sub else f32(acc[c] - a * b)
                        elif add_not_sub:
                            acc[c] = f32(acc[c] + f32(a * b))
                        else:
                            acc[c] = f32(acc[c] - f32(a * b))
                r[i * cols:(i + 1) * cols] = acc if add_not_sub else [-v for v in acc]
        if qr is not None:
            for idx, q in enumerate(qr):
                if q == 0:
                    continue
                k = abs(q)
                if k <= len(recon):
                    m = recon[k - 1]
                else:
                    m = (dead_zone + (k - 0.5)) * step if recon_alt else ((dead_zone + k) - 0.5) * step
                m = -m if q < 0 else m
                r[idx] = f32(r[idx] + (m if v_unrounded else f32(m)))
        w = R.to_f32_values(base_raw, t["base"]["dtype"])
        ys = [f32(w[i] + r[i]) for i in range(rows * cols)]
        return R.from_f32_values(ys, t["dtype"])
    return reconstruct_lossy


def bf16_truncate(ys, dtype):
    if dtype == "BF16":
        return b"".join(struct.pack("<H", struct.unpack("<I", struct.pack("<f", y))[0] >> 16) for y in ys)
    return ORIG["from_f32_values"](ys, dtype)


def f64_no_f32_step(raw, dtype):
    # misreading: keep F64 base values in f64 (no f32 rounding)
    if dtype == "F64":
        n = len(raw) // 8
        return list(struct.unpack("<%dd" % n, raw))
    return ORIG["to_f32_values"](raw, dtype)


def st_unsorted(entries, metadata):
    # misreading of 6: keys in the residual header's order, not sorted
    objs, pos = [], 0
    if metadata:
        md = ",".join("%s:%s" % (R.json_string(k), R.json_string(metadata[k])) for k in R._byte_order(metadata))
        objs.append('"__metadata__":{' + md + "}")
    for name, dtype, shape, raw in entries:
        objs.append('%s:{"data_offsets":[%d,%d],"dtype":"%s","shape":[%s]}' % (
            R.json_string(name), pos, pos + len(raw), dtype, ",".join(map(str, shape))))
        pos += len(raw)
    head = ("{" + ",".join(objs) + "}").encode()
    head += b" " * ((-(8 + len(head))) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(r for _, _, _, r in entries)


def st_no_pad(entries, metadata):
    blob = ORIG["canonical_safetensors"](entries, metadata)
    (n,) = struct.unpack_from("<Q", blob)
    head = blob[8:8 + n].rstrip(b" ")
    return struct.pack("<Q", len(head)) + head + blob[8 + n:]


def original_ignored(header_text, entries):
    # misreading of 6 (v2): the kept header is not used; the canonical layout is written
    md = json.loads(header_text).get("__metadata__", {})
    return ORIG["canonical_safetensors"](entries, md)


def original_sorted_stable(sh, i, tensors, mode):
    # misreading of 2.2 (v2, E1): sort by first offset, ties in JSON text order reversed
    doc = json.loads(sh["original"]["header"])
    names = [k for k in doc if k != "__metadata__"][::-1]
    names.sort(key=lambda k: doc[k]["data_offsets"][0])
    if names != [t["name"] for t in tensors]:
        raise R.Refused("2.2", "variant: original header order differs")
    return ORIG["check_original_header"](sh, i, tensors, mode)


VARIANTS = [
    ("4.3 ties in `order` by larger symbol first", "frequency_table", freq_variant(tie_larger=True)),
    ("4.3 `order` by weight w instead of step-1 f", "frequency_table", freq_variant(order_by_w=True)),
    ("4.3 round half to even (Python round) in step 1", "frequency_table", freq_variant(bankers=True)),
    ("4.3 floor instead of round in step 1", "frequency_table", freq_variant(floor_only=True)),
    ("4.3 `order` recomputed after every pass", "frequency_table", freq_variant(reorder_each_pass=True)),
    ("3.5 no skipping of A[i][j] == 0", "reconstruct_lossy", lossy_variant(no_skip=True)),
    ("3.5 fused multiply-add (one rounding)", "reconstruct_lossy", lossy_variant(fma=True)),
    ("3.5 accumulate +A*B (no sign flip)", "reconstruct_lossy", lossy_variant(add_not_sub=True)),
    ("3.5 j in reverse order", "reconstruct_lossy", lossy_variant(column_major=True)),
    ("3.5 v(q) not rounded to f32 before the add", "reconstruct_lossy", lossy_variant(v_unrounded=True)),
    ("3.5 m = (z + (k - 0.5)) * step", "reconstruct_lossy", lossy_variant(recon_alt=True)),
    ("3.5 BF16 output truncated, not rounded", "from_f32_values", bf16_truncate),
    ("3.5 F64 base kept in f64", "to_f32_values", f64_no_f32_step),
    ("6 safetensors keys in header order, unsorted", "canonical_safetensors", st_unsorted),
    ("6 safetensors header not padded to 8", "canonical_safetensors", st_no_pad),
    ("6 (v2) `original` ignored: canonical layout", "original_layout", original_ignored),
    ("2.2 (v2) offset ties in reversed text order", "check_original_header", original_sorted_stable),
]


def main(folder):
    for label, name, fn in VARIANTS:
        setattr(R, name, fn)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            R.check_golden(folder)
        setattr(R, name, ORIG[name])
        bad = [ln.split()[1] for ln in out.getvalue().splitlines() if ln.startswith("FAIL")]
        print("%-48s %s" % (label, ("caught by " + ", ".join(bad)) if bad else "NOT CAUGHT by any golden file"))


if __name__ == "__main__":
    main(sys.argv[1])
