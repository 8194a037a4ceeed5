# ProtoPNet's prototype head (Chen et al. 2019) on digits, with its cluster and
# separation costs and the last-layer L1 term.
param hidden = 32

model ProtoDigits(classes: int = 10, per_class: int = 2) {
    input x: [B, 64]
    z = MLP(x, hidden=64, out=hidden)
    logits, dist = PrototypeHead(z, classes=classes, per_class=per_class)
    output logits: [B, classes]
    output dist
}

train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y) + 0.8 * cluster_cost(dist, y) - 0.08 * separation_cost(dist, y) + 0.0001 * l1_last_layer()
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 20
    seed      = 0
}
