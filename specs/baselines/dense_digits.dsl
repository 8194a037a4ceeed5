# Baseline for moe_digits.dsl: the MoE layer (8 experts MLP(32 -> 32 -> 32), k = 2)
# replaced by one dense MLP(32 -> 64 -> 32) with the parameters of the two experts a
# token uses (4,192 vs 2 x 2,112), everything else equal.
param hidden = 32

model DenseDigits(classes: int = 10) {
    input x: [B, 64]
    h = relu(Linear(x, out=hidden))
    z = MLP(h, hidden=64, out=hidden)
    logits = Linear(relu(z), out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 20
    seed      = 0
}
