# Gradual magnitude pruning (Zhu & Gupta 2017) of a wide two-layer GAT on karate:
# every projection of both layers is pruned to 90% sparsity between epochs 10 and 60
# (the attention vectors and biases stay dense). `--set hidden=3 --set sparsity=0`
# trains the small dense GAT with about as many non-zero weights (docs/RESULTS.md).
param hidden = 32
param sparsity = 0.9

model PrunedGAT(heads: int = 4, classes: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = elu(GAT(x, edge_index, out=hidden, heads=heads, dropout=0.1))
    logits = GAT(h, edge_index, out=classes, heads=1, concat=false)
    output logits: [N, classes]
}

train {
    data      = karate(per_class=2)
    loss      = cross_entropy(logits, y, mask=train_mask)
    metrics   = [accuracy(logits, y, mask=test_mask)]
    optimizer = adam(lr=0.01, weight_decay=5e-4)
    prune     = magnitude(sparsity=sparsity, start=10, end=60, every=5)
    epochs    = 100
    seed      = 0
}
