import time, torch, sys
sys.path.insert(0, "src"); sys.path.insert(0, "tests/clip")
from unclip.clip import *
from conftest import tiny_config
print(torch.__version__, torch.cuda.is_available())
dev = "cuda"
tok = Tokenizer.train(["a red circle", "a blue square left of a green star"])
m = CLIP(CLIPConfig(vocab_size=tok.vocab_size)).to(dev)
x = torch.rand(256, 3, 64, 64, device=dev) * 2 - 1
tk = tok.encode(["a red circle", "a blue square left of a green star"] * 128, 24).to(dev)
opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
for dtype in [torch.float32, torch.bfloat16]:
    for i in range(25):
        if i == 5: torch.cuda.synchronize(); t = time.time()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            a, b, s = m(x, tk)
            loss = contrastive_loss(a, b, s, caption_ids=caption_ids_from_tokens(tk))
        opt.zero_grad(); loss.backward(); opt.step()
    torch.cuda.synchronize(); print(dtype, "train step ms", (time.time() - t) / 20 * 1000, float(loss))
f = FrozenCLIP.from_model(m, tok)
e1 = f.encode_text(["a red circle"]); print(e1.device, e1.dtype)
f.to(dtype=torch.bfloat16)
e2 = f.encode_text(["a red circle"]); ei = f.encode_image(x[:3].float()); full = f.encode_text_full(["a red circle"])
print(e2.dtype, ei.dtype, full.tokens.dtype, (e1 - e2).abs().max().item(), ei.norm(dim=-1))
f.to(dtype=torch.float32)
import tempfile; d = tempfile.mkdtemp(); f.save(d); g = FrozenCLIP.load(d, device=dev)
print("roundtrip", torch.equal(g.encode_text(["a red circle"]), f.encode_text(["a red circle"])))
