# expect: E0201 5:14
# a tensor never defined
model M {
    input x: [B, 8]
    y = relu(z)
    output y
}
