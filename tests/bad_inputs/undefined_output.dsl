# expect: E0212 6:5
# an output that names nothing
model M {
    input x: [B, 8]
    y = relu(x)
    output z
}
