# specs/switch_lm.dsl: a Switch-Transformer character language model
param d = 64
param heads = 4
param context = 128

block SwitchLayer(d: int, heads: int, experts: int = 8) {
    input x: [B, T, d]
    a = MultiheadAttention(x, heads=heads, causal=true)
    h = LayerNorm(x + a)
    f, balance = MoE(h, experts=experts, k=1, router="switch", capacity=1.25,
                     expert=MLP(hidden=4*d, out=d))
    y = LayerNorm(h + f)
    output y
}

model SwitchLM(vocab: int = 96, layers: int = 2) {
    input tokens: [B, T] long
    emb = Embedding(num=vocab, dim=d)                # a named instance, used twice
    pos = Parameter([context, d], init="normal", std=0.02)
    h = emb(tokens) + pos[:T]                        # T: tokens' length at run time
    repeat layers { h = SwitchLayer(h, d=d, heads=heads) }
    logits = Linear(LayerNorm(h), out=vocab, tie=emb)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=context, batch=32)
    loss      = cross_entropy(logits, next)          # class dim last: [B, T, V] vs [B, T]
    metrics   = [perplexity(logits, next)]
    optimizer = adamw(lr=0.003)
    epochs    = 3
}
