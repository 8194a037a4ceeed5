# Bachlechner et al. 2020, "ReZero is All You Need: Fast Convergence at Large Depth":
# every residual branch is scaled by a learned scalar that starts at zero,
# x <- x + alpha * F(x), alpha = 0 at initialisation, and the LayerNorms go away, so
# the deep network starts as the identity. A ReZero transformer encoder (one alpha per
# layer shared by its attention and feed-forward branches, as in the authors' RZTX
# layer) reads each 8x8 digit as a sequence of 8 rows of 8 pixels.
param d = 32
param heads = 4

block ReZeroLayer(d: int, heads: int) {
    input x: [B, T, d]
    alpha = Parameter([], init="zeros")
    x = x + alpha * MultiheadAttention(x, heads=heads)
    y = x + alpha * MLP(x, hidden=2 * d, out=d, act="relu")
    output y
}

model ReZeroTransformer(classes: int = 10, layers: int = 4) {
    input x: [B, 64]
    rows = reshape(x, [B, 8, 8])                 # 8 tokens (rows) of 8 pixels
    h = Linear(rows, out=d)
    repeat layers { h = ReZeroLayer(h, d=d, heads=heads) }
    logits = Linear(mean(h, dim=1), out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}
