# expect: E0501 11:5
# an unknown train key
model M {
    input x: [B, 4]
    logits = Linear(x, out=3)
    output logits
}
train {
    data = iris()
    loss = cross_entropy(logits, y)
    epochz = 3
}
