# Veličković et al. 2018, "Graph Attention Networks": the paper's transductive model
# (its Cora setting, scaled down): dropout on the inputs, a first GAT layer of 8 heads
# whose outputs are concatenated, ELU, dropout, and an output GAT layer whose single
# head gives the class scores; dropout 0.6 on features and attention coefficients.
# Here on Zachary's karate club: 34 members, 4 communities, one labelled node each.
param hidden = 8
param heads = 8

model GATKarate(classes: int = 4) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = Dropout(x, p=0.6)
    h = elu(GAT(h, edge_index, out=hidden, heads=heads, dropout=0.6))      # [N, 64]
    h = Dropout(h, p=0.6)
    logits = GAT(h, edge_index, out=classes, heads=1, concat=false, dropout=0.6)
    output logits: [N, classes]
}

train {
    data      = karate()
    loss      = cross_entropy(logits, y, mask=train_mask)
    metrics   = [accuracy(logits, y, mask=test_mask)]
    optimizer = adam(lr=0.005, weight_decay=5e-4)
    epochs    = 100
    seed      = 0
}
