# Brody, Alon & Yahav 2022, "How Attentive are Graph Attention Networks?" (GATv2): the
# attention logit a^T LeakyReLU(W [h_i || h_j]) applies the nonlinearity before the
# attention vector, so the ranking of neighbours can depend on the query node (dynamic
# attention). A two-layer GATv2 node classifier: 4 concatenated heads, ELU, then one
# averaged output head with a learned skip connection. Here on a stochastic block model
# graph (4 communities of 50 nodes, noisy community features, 5 labels per community).
param hidden = 8
param heads = 4

model GATv2SBM(classes: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = elu(GATv2(x, edge_index, out=hidden, heads=heads, dropout=0.2))        # [N, 32]
    logits = GATv2(h, edge_index, out=classes, heads=1, concat=false, residual=true)
    output logits: [N, classes]
}

train {
    data      = sbm(blocks=4, size=50, features=16)
    loss      = cross_entropy(logits, y, mask=train_mask)
    metrics   = [accuracy(logits, y, mask=val_mask)]
    optimizer = adam(lr=0.01, weight_decay=5e-4)
    epochs    = 100
    seed      = 0
}
