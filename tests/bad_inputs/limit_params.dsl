# expect: E0802 6:9
# a model over the default limit of 1e9 parameters
model M {
    input x: [B, 8]
    h = Linear(x, out=100000)
    y = Linear(h, out=100000)
    output y
}
