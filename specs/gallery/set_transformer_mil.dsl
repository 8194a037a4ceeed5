# Lee et al. 2019, "Set Transformer: A Framework for Attention-based Permutation-Invariant
# Neural Networks": an encoder of induced set-attention blocks (ISAB: m learned inducing
# points attend to the set, then the set attends to them) and a decoder that pools the set
# by multihead attention from a learned seed vector (PMA). Here on multiple-instance bags
# of 8x8 digits (a bag is positive when it holds a 9); padded slots are masked out of
# every attention whose keys are set elements.
param d = 32
param heads = 4
param inducing = 8

# MAB(X, Y) = LayerNorm(H + rFF(H)),  H = LayerNorm(X + Multihead(X, Y, Y))
block MAB(d: int, heads: int) {
    input x: [B, T, d]
    input y: [B, S, d]
    input mask: [B, S] bool                     # true = a padded element of y
    h = LayerNorm(x + MultiheadAttention(x, k=y, v=y, heads=heads, key_padding_mask=mask))
    out = LayerNorm(h + MLP(h, hidden=d, out=d, act="relu"))
    output out
}

# ISAB_m(X) = MAB(X, H),  H = MAB(I, X),  I: m learned inducing points
block ISAB(d: int, heads: int, m: int) {
    input x: [B, S, d]
    input padding: [B, S] bool
    points = Parameter([1, m, d], init="xavier_uniform")
    h = MAB(expand(points, [B, -1, -1]), x, padding, d=d, heads=heads)      # [B, m, d]
    y = MAB(x, h, full([B, m], false), d=d, heads=heads)                    # [B, S, d]
    output y
}

model SetTransformer(classes: int = 2, layers: int = 2) {
    input x: [B, L, 64]
    input padding: [B, L] bool
    h = Linear(x, out=d)
    repeat layers { h = ISAB(h, padding, d=d, heads=heads, m=inducing) }
    # PMA_1(Z) = MAB(S, rFF(Z)): one learned seed vector pools the whole set
    seed = Parameter([1, 1, d], init="xavier_uniform")
    z = MLP(h, hidden=d, out=d, act="relu")
    pooled = MAB(expand(seed, [B, -1, -1]), z, padding, d=d, heads=heads)   # [B, 1, d]
    logits = Linear(pooled[:, 0], out=classes)
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
