# A small transformer-style encoder: shared embedding, attention, residuals, repeat.
param dim = 32
param vocab = 100

block EncoderLayer(d: int, heads: int = 4) {
    input x: [B, T, d]
    a = MultiheadAttention(LayerNorm(x), heads=heads)
    x = x + a
    f = MLP(LayerNorm(x), hidden=d * 2, out=d)
    y = x + f
    output y
}

model Encoder(classes: int = 5, layers: int = 2) {
    input tokens: [B, T] long
    h = Embedding(tokens, num=vocab, dim=dim)
    repeat layers as i {
        h = EncoderLayer(h, d=dim)
    }
    pooled = mean(h, dim=1)
    logits = Linear(pooled, out=classes)
    output logits: [B, classes]
}
