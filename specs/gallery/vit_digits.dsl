# Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words: Transformers for Image
# Recognition at Scale" (ViT): the 8x8 digit images cut into 2x2 patches by a
# strided Conv2d, a learned [CLS] token in front, learned positions, pre-norm
# transformer encoder layers, and the class read from the [CLS] token's state.
param d = 32
param patch = 2
param heads = 4

block EncoderLayer(d: int, heads: int) {
    input x: [B, T, d]
    x = x + MultiheadAttention(LayerNorm(x), heads=heads)
    y = x + MLP(LayerNorm(x), hidden=2 * d, out=d)
    output y
}

model ViT(classes: int = 10, layers: int = 2) {
    input x: [B, 1, 8, 8]
    p = Conv2d(x, out=d, kernel=patch, stride=patch)          # [B, d, 4, 4]
    p = transpose(flatten(p, start=2), 1, 2)                   # [B, 16, d]: one token per patch
    cls = Parameter([1, 1, d], init="normal", std=0.02)
    pos = Parameter([1, (8 // patch) * (8 // patch) + 1, d], init="normal", std=0.02)
    h = cat(expand(cls, [B, -1, -1]), p, dim=1) + pos       # [B, 17, d]
    repeat layers { h = EncoderLayer(h, d=d, heads=heads) }
    logits = Linear(LayerNorm(h[:, 0]), out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(images=true, batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adamw(lr=0.003)
    epochs    = 10
    seed      = 0
}
