# Baseline for proto_digits.dsl: the same encoder with a plain linear head instead of
# the PrototypeHead (and no cluster/separation costs).
param hidden = 32

model LinearDigits(classes: int = 10) {
    input x: [B, 64]
    z = MLP(x, hidden=64, out=hidden)
    logits = Linear(z, out=classes)
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
