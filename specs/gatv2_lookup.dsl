# GATv2 on the DictionaryLookup task of Brody et al. 2022: dynamic attention fits it.
param k = 10

model Lookup(hidden: int = 64, heads: int = 1) {
    input x: [N, F]
    input edge_index: [2, E] long
    h = GATv2(x, edge_index, out=hidden, heads=heads, self_loops=false)
    logits = Linear(relu(h), out=k)
    output logits: [N, k]
}

train {
    data      = dictionary_lookup(k=k)
    loss      = cross_entropy(logits, y, mask=mask)
    metrics   = [accuracy(logits, y, mask=mask)]
    optimizer = adam(lr=0.005)
    epochs    = 100
    seed      = 0
}
