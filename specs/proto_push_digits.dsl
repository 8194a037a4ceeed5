# ProtoPNet on digits with the push (Chen et al. 2019): every 5 epochs, and after
# the last one, each prototype is projected onto the nearest training embedding of
# its own class, so every prototype is a real training digit. Inspect with
#   dsl explain RUN --prototypes --png protos.png     # nearest digits per prototype
#   dsl explain RUN --input 0                         # the prototypes a prediction rests on
param hidden = 32
param per_class = 2  # prototypes per class; the loss terms below use it too

model ProtoPushDigits(classes: int = 10) {
    input x: [B, 64]
    z = MLP(x, hidden=64, out=hidden)
    logits, dist = PrototypeHead(z, classes=classes, per_class=per_class)
    output logits: [B, classes]
    output dist
}

train {
    data       = digits(batch=64)
    loss       = cross_entropy(logits, y) + 0.8 * cluster_cost(dist, y) - 0.08 * separation_cost(dist, y) + 0.0001 * l1_last_layer()
    metrics    = [accuracy(logits, y)]
    optimizer  = adam(lr=0.003)
    epochs     = 20
    push_every = 5
    seed       = 0
}
