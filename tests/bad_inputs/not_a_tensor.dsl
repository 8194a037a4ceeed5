# expect: E0206 6:14
# a constant where a tensor goes
param k = 3
model M {
    input x: [B, 8]
    y = relu(k)
    output y
}
