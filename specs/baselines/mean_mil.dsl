# Baseline for hopfield_mil.dsl: mean pooling over the real instances of a bag
# (Ilse et al. 2018's "mean operator"), with an MLP after the pool so that the
# model has the size of the HopfieldPooling one (6,598 vs 6,594 parameters).

model MeanMIL(width: int = 32, hidden: int = 68) {
    input x: [B, L, 64]
    input mask: [B, L] bool
    h = relu(Linear(x, out=width))
    m = stack(mask, dim=2)                        # [B, L, 1]: 1 for a real instance
    pooled = sum(h * m, dim=1) / sum(m, dim=1)    # masked mean [B, width]
    z = MLP(pooled, hidden=hidden, out=width)
    logits = Linear(z, out=2)
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
