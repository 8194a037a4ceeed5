# expect: E0210 5:8
# three names for a one-output block
model M {
    input x: [B, 8]
    a, b, y = Linear(x, out=4)
    output y
}
