# Multiple-instance learning with Hopfield pooling (Ramsauer et al. 2021): a bag of
# digits is positive when it holds the target digit; padded slots are masked.
model HopfieldMIL(width: int = 32) {
    input x: [B, L, 64]
    input padding: [B, L] bool
    h = relu(Linear(x, out=width))
    pooled = HopfieldPooling(h, mask=padding, heads=2)
    logits = Linear(pooled, out=2)
    output logits: [B, 2]
}

train {
    data      = mil_bags(target=9)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.001)
    epochs    = 20
    seed      = 0
}
