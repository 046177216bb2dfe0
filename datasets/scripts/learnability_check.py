"""Optional learnability check of the synthetic benchmark (not run in CI; needs numpy + torch).

Can a tiny CNN learn lesion presence and side from the images alone, on a CPU, in minutes?

    cargo run --release -p firempo-datasets --example synth_preview -- /tmp/synth-full 1200 0 400
    python datasets/scripts/learnability_check.py /tmp/synth-full

Measured on 2 CPU threads with the default SynthConfig: presence ~0.95-0.97, side ~1.00 on the
test split after ~150 s (the question alone gives 0.50).
"""
import json, sys, zlib, struct, time
import numpy as np, torch, torch.nn as nn
torch.set_num_threads(2); torch.manual_seed(0)
root = sys.argv[1] if len(sys.argv) > 1 else "/tmp/synth-full"

def png_gray(path):
    data = open(path, "rb").read()
    pos, idat, w, h = 8, b"", 0, 0
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos+8])
        chunk = data[pos+8:pos+8+n]
        if kind == b"IHDR": w, h, depth, ctype = struct.unpack(">IIBB", chunk[:10]); assert depth == 8 and ctype == 0
        if kind == b"IDAT": idat += chunk
        pos += 12 + n
    raw = zlib.decompress(idat); out = np.zeros((h, w), np.int32); prev = np.zeros(w, np.int32)
    for y in range(h):
        f = raw[y*(w+1)]; line = np.frombuffer(raw[y*(w+1)+1:(y+1)*(w+1)], np.uint8).astype(np.int32)
        cur = np.zeros(w, np.int32)
        for x in range(w):
            a = cur[x-1] if x else 0; b = prev[x]; c = prev[x-1] if x else 0
            if f == 0: p = 0
            elif f == 1: p = a
            elif f == 2: p = b
            elif f == 3: p = (a + b) // 2
            else:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2*c)
                p = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
            cur[x] = (line[x] + p) & 255
        out[y] = cur; prev = cur
    return out

def load(split):
    xs, pres, side = [], [], []
    for line in open(f"{root}/{split}.jsonl"):
        r = json.loads(line)
        if r["meta"]["question_kind"] != "presence": continue
        xs.append(png_gray(f"{root}/{r['image']}"))
        pres.append(1 if r["answer"] == "yes" else 0)
        les = r["meta"]["lesions"]
        side.append(-1 if not les else (1 if les[0]["side"] == "left" else 0))
    x = torch.tensor(np.stack(xs), dtype=torch.float32).unsqueeze(1) / 127.5 - 1
    return x, torch.tensor(pres), torch.tensor(side)

t0 = time.time()
xtr, ptr, str_ = load("train"); xte, pte, ste = load("test")
print("loaded", xtr.shape, xte.shape, f"{time.time()-t0:.1f}s")
net = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
    nn.AdaptiveMaxPool2d((1, 2)), nn.Flatten(), nn.Linear(64, 3))
opt = torch.optim.Adam(net.parameters(), 1e-3)
t0 = time.time()
for epoch in range(60):
    net.train(); perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), 64):
        idx = perm[i:i+64]; out = net(xtr[idx])
        loss = nn.functional.cross_entropy(out[:, :2], ptr[idx])
        m = str_[idx] >= 0
        if m.any(): loss = loss + nn.functional.binary_cross_entropy_with_logits(out[m, 2], str_[idx][m].float())
        opt.zero_grad(); loss.backward(); opt.step()
    net.eval()
    with torch.no_grad():
        o = net(xte); pacc = (o[:, :2].argmax(1) == pte).float().mean().item()
        m = ste >= 0; sacc = ((o[m, 2] > 0).long() == ste[m]).float().mean().item()
    print(f"loss {loss.item():.3f} epoch {epoch} {time.time()-t0:.0f}s presence {pacc:.3f} side {sacc:.3f}", flush=True)
    if time.time() - t0 > 150: break
