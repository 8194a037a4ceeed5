# expect: E0101 6:13
# the model's `}` is missing
model M {
    input x: [B, 8]
    y = relu(x)
    output y
