# expect: E0402 5:19
# a misspelt hyperparameter
model M {
    input x: [B, 8]
    y = Linear(x, outt=4)
    output y
}
