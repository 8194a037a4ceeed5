# expect: E0304 6:15
# an output whose declared shape is wrong
model M {
    input x: [B, 8]
    y = Linear(x, out=4)
    output y: [B, 5]
}
