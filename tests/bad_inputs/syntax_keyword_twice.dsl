# expect: E0101 5:26
# the same keyword twice
model M {
    input x: [B, 8]
    y = Linear(x, out=4, out=5)
    output y
}
