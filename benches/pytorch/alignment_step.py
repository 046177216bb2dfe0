"""The PyTorch half of the alignment-step comparison (Rust half: models/benches/alignment_step.rs).

The same architecture as firempo's `small` preset (CLIP-style tower 2 x 64-d on 64 px / 8 px patches,
LLaVA MLP projector, LLaMA decoder 4 x 256-d, GQA 8/2 heads, SwiGLU 688), LoRA r8 / alpha 16 /
dropout 0.05 on the seven decoder projections (PEFT), AdamW, and the same loss: DPO (image, chosen
vs rejected) + mDPO image term (chosen, image vs corrupted) + token KL to the adapters-off reference
at every answer position. One pair = 2 prefixes (image, corrupted copy) x 2 answers of 32 tokens.

Two ways:
- naive: the TRL way, 4 full `prefix + answer` sequences in one batch for the policy and again for
  the reference, logits at every position;
- smart: each prefix once with a KV cache (batch 2), the cache repeated per answer, the answers
  after it (batch 4), logits only where they are scored; the same for the reference.

Run by hand, one configuration per process (the driver, compare.py, interleaves them):
    /tmp/venv/bin/python benches/pytorch/alignment_step.py --way naive --prefix 600 --vocab 2048
Prints one JSON line: step times in seconds after one warm-up step, and the process's peak RSS.
"""

import argparse
import json
import resource
import time
import warnings

import torch
import transformers
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

ANSWERS = 2
ANSWER_LEN = 32
BETA = 0.1
LR = 1e-5
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def build(vocab: int):
    vision = CLIPVisionConfig(
        image_size=64, patch_size=8, hidden_size=64, num_attention_heads=4,
        intermediate_size=128, num_hidden_layers=2, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    )
    text = LlamaConfig(
        vocab_size=vocab, hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
        num_key_value_heads=2, head_dim=32, intermediate_size=688, rms_norm_eps=1e-6,
        rope_theta=10000.0, tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision, text_config=text, image_token_index=vocab - 1,
        projector_hidden_act="gelu", vision_feature_layer=-2,
        vision_feature_select_strategy="default",
    )
    model = LlavaForConditionalGeneration(config)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules=TARGETS)
    # Only the language model's projections, as firempo (the tower has q/k/v/out_proj too).
    lora.target_modules = r".*language_model.*\.(" + "|".join(TARGETS) + ")"
    return get_peft_model(model, lora), config


def inputs(prefix_len: int, vocab: int):
    """Token ids as the Rust bench: [1, image x 64, 2 + (7 i mod (vocab - 10)) ...]."""
    v = vocab - 10
    prefix = [1] + [vocab - 1] * 64 + [2 + (i * 7) % v for i in range(prefix_len - 1 - 64)]
    answers = [[3 + ((a * ANSWER_LEN + t) * 13) % v for t in range(ANSWER_LEN)] for a in range(ANSWERS)]
    image = torch.randn(1, 3, 64, 64)
    pixels = torch.cat([image, image + 0.5 * torch.randn(1, 3, 64, 64)])
    return torch.tensor(prefix), torch.tensor(answers), pixels


def token_logps_naive(model, prefix, answers, pixels):
    """4 sequences [prefix + answer], variant order (image, chosen), (image, rejected), (corrupted, ...)."""
    seqs = torch.stack([torch.cat([prefix, answers[a]]) for _ in range(2) for a in range(ANSWERS)])
    px = pixels.repeat_interleave(ANSWERS, dim=0)
    logits = model(input_ids=seqs, pixel_values=px).logits  # [4, P + 32, V], every position
    p = prefix.shape[0]
    return F.log_softmax(logits[:, p - 1 : p - 1 + ANSWER_LEN], dim=-1)  # [4, 32, V]


def token_logps_smart(model, prefix, answers, pixels):
    """Each prefix once (batch 2) with a KV cache, then the 4 answers after the repeated cache."""
    p = prefix.shape[0]
    out = model(input_ids=prefix.repeat(2, 1), pixel_values=pixels, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    cache.batch_repeat_interleave(ANSWERS)
    ans = answers.repeat(2, 1)  # [4, 32]: (image, a0), (image, a1), (corrupted, a0), ...
    mask = torch.ones(ans.shape[0], p + ANSWER_LEN, dtype=torch.long)
    logits = model(input_ids=ans, past_key_values=cache, attention_mask=mask, use_cache=True).logits
    first = out.logits[:, -1:].repeat_interleave(ANSWERS, dim=0)
    logits = torch.cat([first, logits[:, :-1]], dim=1)  # [4, 32, V]
    return F.log_softmax(logits, dim=-1)


def step(model, optim, way, prefix, answers, pixels):
    scored = token_logps_naive if way == "naive" else token_logps_smart
    ids = answers.repeat(2, 1).unsqueeze(-1)  # [4, 32, 1]
    with torch.no_grad(), model.disable_adapter():
        ref_tok = scored(model, prefix, answers, pixels)
    tok = scored(model, prefix, answers, pixels)
    r = BETA * (tok.gather(-1, ids).sum((1, 2)) - ref_tok.gather(-1, ids).sum((1, 2)))
    r = r.view(2, ANSWERS)  # [prefix (image, corrupted), answer (chosen, rejected)]
    dpo = -F.logsigmoid(r[0, 0] - r[0, 1])
    mdpo = -F.logsigmoid(r[0, 0] - r[1, 0])
    kl = (tok.exp() * (tok - ref_tok)).sum(-1).mean()
    loss = dpo + mdpo + kl
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--way", choices=["naive", "smart"], required=True)
    ap.add_argument("--prefix", type=int, default=600)
    ap.add_argument("--vocab", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--check", action="store_true", help="assert naive and smart give equal log-probs")
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    transformers.logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model, _ = build(a.vocab)
    if a.check:
        model.eval()
        prefix, answers, pixels = inputs(a.prefix, a.vocab)
        with torch.no_grad():
            diff = (token_logps_naive(model, prefix, answers, pixels)
                    - token_logps_smart(model, prefix, answers, pixels)).abs().max().item()
        print(f"max |naive - smart| log-prob: {diff:.2e}")
        assert diff < 1e-4, diff
        return
    model.train()
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    prefix, answers, pixels = inputs(a.prefix, a.vocab)
    step(model, optim, a.way, prefix, answers, pixels)
    times = []
    for _ in range(a.steps):
        t = time.perf_counter()
        step(model, optim, a.way, prefix, answers, pixels)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"impl": f"pytorch-{a.way}", "prefix": a.prefix, "vocab": a.vocab,
                      "threads": a.threads, "times": times, "peak_rss_bytes": rss}))


if __name__ == "__main__":
    main()
