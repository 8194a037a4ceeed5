# Shazeer et al. 2017, "Outrageously Large Neural Networks: The Sparsely-Gated
# Mixture-of-Experts Layer", section B (hierarchical MoE): a primary noisy top-k gate
# picks k of `groups` secondary mixtures, and each secondary mixture (itself an MoE with
# its own noisy top-k gate) picks k of its `experts` feed-forward experts. The expert of
# the outer MoE is simply another MoE block value; the inner balance losses are added
# to the outer one by the library. Here as a residual layer of a digits classifier.
param d = 32
param groups = 4
param experts = 4

model HierarchicalMoE(classes: int = 10) {
    input x: [B, 64]
    h = relu(Linear(x, out=d))
    m, balance = MoE(h, experts=groups, k=2,
                     expert=MoE(experts=experts, k=2, expert=MLP(hidden=2 * d, out=d)))
    logits = Linear(relu(h + m), out=classes)
    output logits: [B, classes]
}

train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y)        # both levels' balance losses are added
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 5
    seed      = 0
}
