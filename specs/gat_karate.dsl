# Two GAT layers for node classification on Zachary's karate club (PyG's KarateClub).
model KarateGAT(hidden: int = 8, heads: int = 4, classes: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = elu(GAT(x, edge_index, out=hidden, heads=heads, dropout=0.1))
    logits = GAT(h, edge_index, out=classes, heads=1, concat=false)
    output logits: [N, classes]
}

train {
    data      = karate()
    loss      = cross_entropy(logits, y, mask=train_mask)
    metrics   = [accuracy(logits, y, mask=test_mask)]
    optimizer = adam(lr=0.01, weight_decay=5e-4)
    epochs    = 100
    seed      = 0
}
