# Baseline for switch_lm.dsl: the same character language model with a dense MLP of
# the same width as one expert in place of each Switch MoE. With one expert per token,
# both spend the same FLOPs per token (the router's d x experts aside); the MoE has
# experts times the MLP parameters.
param d = 64
param heads = 4
param context = 128

block DenseLayer(d: int, heads: int) {
    input x: [B, T, d]
    a = MultiheadAttention(x, heads=heads, causal=true)
    h = LayerNorm(x + a)
    f = MLP(h, hidden=4*d, out=d)
    y = LayerNorm(h + f)
    output y
}

model DenseLM(vocab: int = 96, layers: int = 2) {
    input tokens: [B, T] long
    emb = Embedding(num=vocab, dim=d)
    pos = Parameter([context, d], init="normal", std=0.02)
    h = emb(tokens) + pos[:T]
    repeat layers { h = DenseLayer(h, d=d, heads=heads) }
    logits = Linear(LayerNorm(h), out=vocab, tie=emb)
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=context, batch=32)
    loss      = cross_entropy(logits, next)
    metrics   = [perplexity(logits, next)]
    optimizer = adamw(lr=0.003)
    epochs    = 3
}
