# expect: E0401 5:23
# a negative output size
model M {
    input x: [B, 8]
    y = Linear(x, out=-3)
    output y
}
