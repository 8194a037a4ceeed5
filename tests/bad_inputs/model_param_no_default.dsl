# expect: E0403 3:9
# a model param without a value
model M(n: int) {
    input x: [B, 8]
    y = relu(x)
    output y
}
