# expect: E0405 3:11
# constant division by zero
param a = 1 / 0
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}
