# expect: E0305 4:18
# a negative dimension
model M {
    input x: [B, -8]
    y = relu(x)
    output y
}
