# expect: E0101 3:12
# a model param of an unknown type
model M(n: complex = 1) {
    input x: [B, 8]
    y = relu(x)
    output y
}
