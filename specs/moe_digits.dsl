# A sparsely-gated mixture of experts (Shazeer et al. 2017) on digits; the balance
# loss is added to the training loss automatically.
param hidden = 32
param balance = 0.01  # balance-loss coefficient: `--set balance=0` turns it off

model MoEDigits(experts: int = 8, k: int = 2, classes: int = 10) {
    input x: [B, 64]
    h = relu(Linear(x, out=hidden))
    z, balance = MoE(h, experts=experts, k=k, expert=MLP(hidden=32, out=hidden), balance=balance)
    logits = Linear(relu(z), out=classes)
    output logits: [B, classes]
    output balance
}

train {
    data      = digits(batch=64)
    loss      = cross_entropy(logits, y)
    metrics   = [accuracy(logits, y)]
    optimizer = adam(lr=0.003)
    epochs    = 20
    seed      = 0
}
