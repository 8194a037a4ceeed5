# specs/protogat.dsl: node classification with all four research blocks
param hidden = 16

block Expert(dim: int, width: int = 64) {
    input x: [..., dim]
    h = gelu(Linear(x, out=width))
    y = Linear(h, out=dim)
    output y
}

model ProtoGAT(classes: int = 4, heads: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long

    h = GAT(x, edge_index, out=hidden, heads=heads)     # [N, hidden*heads]
    h = elu(h)
    repeat 2 as i {
        h = GATv2(h, edge_index, out=hidden) + Linear(h, out=hidden)
        h = elu(h)
    }
    m = HopfieldLayer(h, patterns=16)                   # learned memory lookup
    z, balance = MoE(h + m, experts=4, k=2, expert=Expert(dim=hidden))
    logits, dist = PrototypeHead(z, classes=classes, per_class=2)

    output logits: [N, classes]
}

train {
    data      = karate()
    loss      = cross_entropy(logits, y, mask=train_mask)
    metrics   = [accuracy(logits, y, mask=test_mask)]
    optimizer = adam(lr=0.01, weight_decay=5e-4)
    epochs    = 200
    seed      = 0
}
