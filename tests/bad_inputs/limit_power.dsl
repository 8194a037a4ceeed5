# expect: E0801 3:11
# an exponent over 64 in constant arithmetic
param a = 2 ** 100
model M {
    input x: [B, 8]
    y = relu(x)
    output y
}
