# Gradual magnitude pruning (Zhu & Gupta 2017) on digits: a wide MLP is pruned to
# 90% sparsity along the cubic schedule between epochs 2 and 30, then fine-tuned.
# `--set sparsity=0 --set hidden=29` trains the small dense MLP with about as many
# non-zero parameters (docs/INSIGHT.md has the comparison).
param hidden = 256
param sparsity = 0.9  # final sparsity of every Linear weight; 0 turns pruning off
param scope = "layer"  # "layer": each layer to `sparsity` (the paper); "global": ranked together

model PrunedMLP(classes: int = 10) {
    input x: [B, 64]
    h = relu(Linear(x, out=hidden))
    logits = Linear(h, out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    prune     = magnitude(sparsity=sparsity, start=2, end=30, every=2, scope=scope, layers=[h, logits])
    epochs    = 40
    seed      = 0
}
