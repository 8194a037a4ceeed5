# expect: E0212 3:7
# a model without an output
model M {
    input x: [B, 8]
    y = relu(x)
}
