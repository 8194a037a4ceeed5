# Prototypical Networks (Snell et al. 2017): 5-way 1-shot episodes from digits, with
# held-out test classes. One encoder instance embeds queries and support alike.
param shots = 1  # support examples per class: `--set shots=5` for 5-shot
model ProtoNetDigits(ways: int = 5, width: int = 32) {
    input query: [Q, 64]
    input support: [S, 64]
    input support_y: [S] long
    enc = MLP(hidden=64, out=width)
    logits = ProtoNet(enc(query), enc(support), support_y, ways=ways)
    output logits: [Q, ways]
}

train {
    data      = episodes(ways=5, shots=shots, queries=5)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.001)
    epochs    = 20
    seed      = 0
}
