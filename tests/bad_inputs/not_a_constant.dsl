# expect: E0207 5:23
# a tensor where a constant goes
model M {
    input x: [B, 8]
    y = Linear(x, out=x)
    output y
}
