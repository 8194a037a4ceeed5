# Baseline for hopfield_mil.dsl: attention-based MIL pooling (Ilse et al. 2018),
# a_i = softmax_i(w^T tanh(V h_i)) over the real instances, z = sum_i a_i h_i, then
# a linear map; sized like the HopfieldPooling model (6,603 vs 6,594 parameters).

model AttentionMIL(width: int = 32, att: int = 100) {
    input x: [B, L, 64]
    input padding: [B, L] bool
    h = relu(Linear(x, out=width))
    score = Linear(tanh(Linear(h, out=att)), out=1)          # [B, L, 1]
    score = score - 1000000000.0 * stack(padding, dim=2)     # padded slots get no weight
    a = softmax(score, dim=1)
    pooled = Linear(sum(a * h, dim=1), out=width)
    logits = Linear(pooled, out=2)
    output logits: [B, 2]
}

train {
    data      = mil_bags(target=9)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.001)
    epochs    = 20
    seed      = 0
}
