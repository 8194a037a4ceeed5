# expect: E0301 6:9
# adding [B, 8] and [B, 4]
model M {
    input x: [B, 8]
    h = Linear(x, out=4)
    y = h + x
    output y
}
