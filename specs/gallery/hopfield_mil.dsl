# Ramsauer et al. 2021, "Hopfield Networks is All You Need": modern Hopfield layers for
# multiple-instance learning, as in the paper's MIL experiments. Each instance is
# embedded; a Hopfield layer lets the instances of a bag retrieve from each other
# (self-association, padded slots masked out as stored patterns); Hopfield pooling then
# retrieves from the bag with learned state patterns (queries) and reads one vector per
# bag. Bags of 8x8 digits, positive when they hold a 9.
param d = 32
param heads = 4

model HopfieldMIL(classes: int = 2) {
    input x: [B, L, 64]
    input padding: [B, L] bool
    h = relu(Linear(x, out=d))
    h = h + Hopfield(h, stored_mask=padding, heads=heads)          # association in the bag
    pooled = HopfieldPooling(h, mask=padding, heads=heads, queries=1)   # [B, d]
    logits = Linear(pooled, out=classes)
    output logits: [B, classes]
}

train {
    data      = mil_bags(target=9)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.001)
    epochs    = 10
    seed      = 0
}
