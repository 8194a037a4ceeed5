# Radford et al. 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2), a
# decoder-only transformer after Vaswani et al. 2017: token and learned position
# embeddings, pre-LayerNorm blocks of causal multi-head self-attention and a GELU MLP,
# a final LayerNorm, and an output layer tied to the token embedding (Press & Wolf 2017).
# Here as a small character language model. The Embedding table starts N(0, 1), so the
# tied output is scaled by 1/sqrt(d): Vaswani et al.'s convention (embeddings times
# sqrt(d) with a table of variance 1/d), written for a unit-variance table.
param d = 64
param heads = 4
param context = 64

block GPTBlock(d: int, heads: int) {
    input x: [B, T, d]
    x = x + MultiheadAttention(LayerNorm(x), heads=heads, causal=true)
    y = x + MLP(LayerNorm(x), hidden=4 * d, out=d, act="gelu")
    output y
}

model GPT(vocab: int = 96, layers: int = 2) {
    input tokens: [B, T] long
    wte = Embedding(num=vocab, dim=d)                       # used twice: input and output
    wpe = Embedding(num=context, dim=d)
    h = wte(tokens) + wpe(arange(T))                        # positions 0..T-1
    repeat layers { h = GPTBlock(h, d=d, heads=heads) }
    logits = Linear(LayerNorm(h), out=vocab, tie=wte, bias=false) * d ** -0.5
    output logits: [B, T, vocab]
}

train {
    data      = chars(context=context, batch=16, chars=50000)
    loss      = cross_entropy(logits, next)
    metrics   = [accuracy(logits, next)]
    optimizer = adamw(lr=0.003)
    epochs    = 5
    seed      = 0
}
