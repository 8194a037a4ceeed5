# expect: E0403 5:9
# a required hyperparameter left out
model M {
    input x: [B, 8]
    y = Linear(x)
    output y
}
