"""A sentence-transformers model folder through resid and back into
SentenceTransformer(path).

The model is built here, never downloaded: a tiny BERT (config written here,
a WordPiece vocabulary written here for BertTokenizerFast) wrapped as
SentenceTransformer(modules=[Transformer, Pooling(mean), Dense, Normalize])
and saved with `.save()` as base/ (module subfolders 1_Pooling/, 2_Dense/,
3_Normalize/, modules.json, config_sentence_transformers.json, tokenizer
files). It is then fine-tuned for a few Adam steps (pulling paired fixed
sentences together) and saved as trained/. Then:

- `resid pack --lossless` + `resid unpack`: every file of trained/
  byte-identical (filecmp), and `encode()` of fixed sentences bit-equal
  (torch.equal) to the trained model's;
- `resid pack --bits-per-param B` + `unpack`: the folder loads, the
  non-tensor files are identical, and the distance of the embeddings from
  the trained model's is measured (max |d|, and 1 - cosine), at B and
  at 4 and 8 bits per parameter.

resid's residual coding covers the main checkpoint (model.safetensors);
2_Dense/model.safetensors is one of the folder's other files, stored whole
and exact in both modes.

Usage: bench/.venv-hf/bin/python bench/st_roundtrip.py [--resid PATH] [--bits 2]
(bench/hf.sh runs it after bench/hf_roundtrip.py.)
"""

import argparse
import filecmp
import os
import shutil
import string
import subprocess
import sys

import torch

SENTENCES = [
    "the cat sat on the mat",
    "a cat is sitting on a rug",
    "stocks fell sharply on monday",
    "markets dropped at the start of the week",
    "she plays the violin every evening",
    "every night she practices her violin",
    "the train to paris leaves at noon",
    "a midday train departs for paris",
]


def vocab_file(path):
    """Specials, every word of SENTENCES, and single letters (plain and ##) so
    that any lowercase text tokenizes."""
    words = sorted({w for s in SENTENCES for w in s.split()})
    letters = list(string.ascii_lowercase)
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words + letters + ["##" + c for c in letters]
    with open(path, "w") as f:
        f.write("\n".join(toks) + "\n")
    return len(toks)


def build(out, steps):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
    from transformers import BertConfig, BertModel, BertTokenizerFast

    torch.manual_seed(0)
    raw = os.path.join(out, "bert")
    os.makedirs(raw)
    vf = os.path.join(out, "vocab.txt")
    n = vocab_file(vf)
    cfg = BertConfig(vocab_size=n, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(raw)
    BertTokenizerFast(vocab_file=vf, do_lower_case=True).save_pretrained(raw)
    tr = Transformer(raw, max_seq_length=32)
    dim = tr.get_word_embedding_dimension()
    model = SentenceTransformer(
        modules=[tr, Pooling(dim, pooling_mode="mean"), Dense(dim, 32), Normalize()], device="cpu")
    base, trained = os.path.join(out, "base"), os.path.join(out, "trained")
    model.save(base)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    feats = model.preprocess(SENTENCES)
    losses = []
    for _ in range(steps):
        emb = model(dict(feats))["sentence_embedding"]
        # In-batch contrastive: paired sentences (0,1), (2,3), ... together.
        sim = (emb @ emb.T) * 20 - torch.eye(len(SENTENCES)) * 1e4
        target = torch.arange(len(SENTENCES)) ^ 1
        loss = torch.nn.functional.cross_entropy(sim, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    model.save(trained)
    return base, trained, losses


def encode(folder):
    from sentence_transformers import SentenceTransformer

    m = SentenceTransformer(folder, device="cpu", local_files_only=True)
    return m.encode(SENTENCES, convert_to_tensor=True, batch_size=len(SENTENCES))


def run(cmd):
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stdout}\n{p.stderr}")


def files(folder):
    return sorted(os.path.relpath(os.path.join(d, f), folder)
                  for d, _, fs in os.walk(folder) for f in fs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--resid", default=os.environ.get("RESID", "target/debug/resid"))
    ap.add_argument("--bits", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default="bench/out/st")
    a = ap.parse_args()
    shutil.rmtree(a.out, ignore_errors=True)
    os.makedirs(a.out)
    base, trained, losses = build(a.out, a.steps)
    names = files(trained)
    assert "modules.json" in names and "1_Pooling/config.json" in names, names
    want = encode(trained)
    assert not torch.equal(want, encode(base)), "the fine-tune changed nothing"
    size = sum(os.path.getsize(os.path.join(trained, n)) for n in names)
    rows = []
    modes = [("lossless", ["--lossless"])] + [
        (f"--bits-per-param {b:g}", ["--bits-per-param", str(b)])
        for b in sorted({a.bits, 4.0, 8.0})]
    for mode, flags in modes:
        tag = "lossless" if mode == "lossless" else "lossy-" + flags[1]
        f = os.path.join(a.out, f"{tag}.resid")
        run([a.resid, "pack", "--base", base, "--trained", trained, *flags, "-o", f, "-q"])
        u = os.path.join(a.out, f"unpacked-{tag}")
        run([a.resid, "unpack", "--base", base, f, "-o", u, "-q"])
        assert files(u) == names, f"{mode}: files differ: {files(u)} vs {names}"
        differ = [n for n in names
                  if not filecmp.cmp(os.path.join(trained, n), os.path.join(u, n), shallow=False)]
        got = encode(u)
        d = (got - want).abs().max().item()
        cos = (1 - torch.nn.functional.cosine_similarity(got, want)).max().item()
        if tag == "lossless":
            assert not differ, f"lossless: files differ: {differ}"
            assert torch.equal(got, want), "lossless: encode() differs"
            check = "every file byte-identical"
        else:
            assert differ == ["model.safetensors"], f"lossy: unexpected differences {differ}"
            check = "all but model.safetensors identical"
        rows.append((mode, os.path.getsize(f), check, d, cos))
    print(f"trained folder: {len(names)} files, {size} bytes (fine-tune: {a.steps} Adam steps, "
          f"loss {losses[0]:.3f} -> {losses[-1]:.3f}): {', '.join(names)}")
    print(f"\n{'mode':<22} {'.resid B':>9} {'files check':<36} {'max |d emb|':>11} {'max 1-cos':>10}")
    for m, nb, check, d, cos in rows:
        print(f"{m:<22} {nb:>9} {check:<36} {d:>11.3e} {cos:>10.3e}")
    import sentence_transformers
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"sentence-transformers {sentence_transformers.__version__}; embeddings: "
          f"SentenceTransformer(path).encode() of {len(SENTENCES)} fixed sentences; lossless: torch.equal")


if __name__ == "__main__":
    main()
