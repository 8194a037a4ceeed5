# expect: E0101 5:24
# an unclosed call
model M {
    input x: [B, 8]
    y = Linear(x, out=4
    output y
}
