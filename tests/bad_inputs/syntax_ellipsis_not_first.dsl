# expect: E0101 4:18
# `...` after a dimension
model M {
    input x: [B, ...]
    y = relu(x)
    output y
}
